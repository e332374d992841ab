//! The headers the service writes on its records: content type, where a routed record came from,
//! and the producer's own headers, without any that claim to be the service's.
use super::*;

/// The headers of a record the service writes about a producer's record: the service's own, then
/// the producer's, except any that claim to be the service's (`autoclaim.*`): a producer must not
/// be able to forge where a dead letter or a routed record came from.
pub(super) fn with_producer_headers(
    own: &[(&str, &str)],
    message: &BorrowedMessage<'_>,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(own.len() + 2);
    for (key, value) in own {
        headers = headers.insert(Header {
            key,
            value: Some(*value),
        });
    }
    for h in message
        .headers()
        .iter()
        .flat_map(|original| original.iter())
    {
        if !is_service_header(h.key) {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    headers
}

/// Whether a header name is in the service's own namespace (`autoclaim.`, in any case).
pub fn is_service_header(key: &str) -> bool {
    key.len() >= SERVICE_HEADER_PREFIX.len()
        && key.as_bytes()[..SERVICE_HEADER_PREFIX.len()]
            .eq_ignore_ascii_case(SERVICE_HEADER_PREFIX.as_bytes())
}

pub(super) const SERVICE_HEADER_PREFIX: &str = "autoclaim.";
/// On a routed record: the activity partition and offset it was routed from.
pub const ROUTE_PARTITION_HEADER: &str = "autoclaim.route.partition";
pub const ROUTE_OFFSET_HEADER: &str = "autoclaim.route.offset";

pub(super) fn content_type(format: Format) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: codec::CONTENT_TYPE_HEADER,
        value: Some(format.content_type()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_headers_in_the_service_namespace_are_recognised_in_any_case() {
        for key in [
            "autoclaim.source.offset",
            "Autoclaim.Error.Code",
            "AUTOCLAIM.x",
        ] {
            assert!(is_service_header(key), "{key}");
        }
        for key in [
            "autoclaim",
            "autoclaimx.y",
            "content-type",
            "x-autoclaim.source",
            "",
        ] {
            assert!(!is_service_header(key), "{key}");
        }
    }
}
