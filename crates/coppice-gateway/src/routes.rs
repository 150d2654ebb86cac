//! HTTP routes, one module per resource.

pub mod builds;
pub mod dir_snapshots;
pub mod e2b_builds;
pub mod health;
pub mod network;
pub mod sandboxes;
pub mod snapshots;
pub mod template_tags;
pub mod templates;
pub mod volume_content;
pub mod volumes;

/// Largest page of a listing.
pub(crate) const MAX_PAGE: usize = 100;

/// One page of `items` (already in cursor order) after the item whose key is `next_token`,
/// and the key of the page's last item when more follow (the next `X-Next-Token`).
///
/// # Errors
/// 400 for a limit outside `1..=MAX_PAGE` or a token naming no item.
pub(crate) fn page<'a, T>(
    items: &'a [T],
    key: impl Fn(&T) -> &str,
    limit: Option<usize>,
    next_token: Option<&str>,
) -> Result<(&'a [T], Option<String>), crate::error::ApiError> {
    let limit = match limit {
        None => MAX_PAGE,
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(limit) => {
            return Err(crate::error::ApiError::bad_request(format!(
                "limit {limit} is outside 1..={MAX_PAGE}"
            )));
        }
    };
    let start = match next_token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => {
            items
                .iter()
                .position(|item| key(item) == token)
                .ok_or_else(|| {
                    crate::error::ApiError::bad_request(format!("nextToken {token:?} is not valid"))
                })?
                + 1
        }
    };
    let rest = items.get(start..).unwrap_or_default();
    let page = rest.get(..limit.min(rest.len())).unwrap_or_default();
    let next = (page.len() < rest.len())
        .then(|| page.last().map(|item| key(item).to_owned()))
        .flatten();
    Ok((page, next))
}
