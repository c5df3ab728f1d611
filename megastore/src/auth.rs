//! The bearer token a replica's listener may require: every request (client API and
//! replication alike) then carries `authorization: Bearer <token>`, and one without it
//! is answered UNAUTHENTICATED before it reaches a service.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::Error;

/// The server side: checks each request's token, when one is required.
#[derive(Clone, Default)]
pub struct RequireToken {
    expected: Option<Vec<u8>>,
}

impl RequireToken {
    /// `None`: every request is let in (loopback development).
    pub fn new(token: Option<&str>) -> Self {
        RequireToken {
            expected: token.map(|t| format!("Bearer {t}").into_bytes()),
        }
    }
}

/// Compares in time that depends only on the lengths, so that a guesser learns
/// nothing from how long a refusal takes.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        match request.metadata().get("authorization") {
            Some(given) if same_bytes(given.as_bytes(), expected) => Ok(request),
            Some(_) => Err(Status::unauthenticated("the bearer token is not valid")),
            None => Err(Status::unauthenticated(
                "this server requires a bearer token (authorization: Bearer ...)",
            )),
        }
    }
}

/// The client side: adds the token to each request, when one is set.
#[derive(Clone, Default)]
pub struct AddToken {
    header: Option<MetadataValue<Ascii>>,
}

impl AddToken {
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        let header = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::Invalid("a token must be printable ASCII".into()))
            })
            .transpose()?;
        Ok(AddToken { header })
    }
}

impl Interceptor for AddToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut()
                .insert("authorization", h.parse().expect("ascii"));
        }
        r
    }

    #[test]
    fn a_required_token_must_match_exactly() {
        let mut check = RequireToken::new(Some("s3cret"));
        assert!(check.call(with(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
        ] {
            let refused = check.call(with(bad)).expect_err("refused");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
        assert!(RequireToken::new(None).call(with(None)).is_ok());
    }

    #[test]
    fn the_client_side_adds_what_the_server_side_wants() {
        let mut add = AddToken::new(Some("s3cret")).expect("ascii");
        let request = add.call(Request::new(())).expect("added");
        assert!(RequireToken::new(Some("s3cret")).call(request).is_ok());
        assert!(AddToken::new(Some("bad\ntoken")).is_err());
    }
}
