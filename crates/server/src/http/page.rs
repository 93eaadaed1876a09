//! Pagination: `page` / `per_page` (default 25, max 100), RFC 8288 `Link`
//! header with first/prev/next/last, and `X-Total-Count`.

use axum::http::header::{HeaderName, LINK};
use axum::http::{HeaderMap, HeaderValue, Uri};
use serde::Deserialize;

use super::input::Checks;

/// Default page size.
pub const DEFAULT_PER_PAGE: i64 = 25;
/// Largest page size; larger requests are clamped.
pub const MAX_PER_PAGE: i64 = 100;

/// The page the client asked for.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// 1-based page number.
    pub page: i64,
    /// Rows per page.
    pub per_page: i64,
}

/// Raw pagination parameters (flattened into each list's query struct).
#[derive(Debug, Default, Deserialize)]
pub struct PageParams {
    /// 1-based page number.
    pub page: Option<String>,
    /// Rows per page.
    pub per_page: Option<String>,
}

impl PageParams {
    /// Validates into a [`Page`], recording problems on `checks`.
    pub fn parse(&self, checks: &mut Checks) -> Page {
        let page = match self.page.as_deref().map(str::parse::<i64>) {
            None => 1,
            Some(Ok(p)) if (1..=1_000_000).contains(&p) => p,
            Some(_) => {
                checks.add("page", "must be a whole number from 1");
                1
            }
        };
        let per_page = match self.per_page.as_deref().map(str::parse::<i64>) {
            None => DEFAULT_PER_PAGE,
            Some(Ok(n)) if n >= 1 => n.min(MAX_PER_PAGE),
            Some(_) => {
                checks.add("per_page", "must be a whole number from 1 to 100");
                DEFAULT_PER_PAGE
            }
        };
        Page { page, per_page }
    }
}

impl Page {
    /// SQL offset.
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }

    /// The `Link` and `X-Total-Count` headers for a result of `total` rows.
    pub fn headers(&self, uri: &Uri, total: i64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-total-count"),
            HeaderValue::from(total),
        );
        let last = ((total + self.per_page - 1) / self.per_page).max(1);
        let other: Vec<(String, String)> = uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .filter(|(k, _)| k != "page" && k != "per_page")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let link = |page: i64, rel: &str| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.extend_pairs(other.iter());
            q.append_pair("page", &page.to_string());
            q.append_pair("per_page", &self.per_page.to_string());
            format!("<{}?{}>; rel=\"{rel}\"", uri.path(), q.finish())
        };
        let mut links = vec![link(1, "first")];
        if self.page > 1 {
            links.push(link((self.page - 1).min(last), "prev"));
        }
        if self.page < last {
            links.push(link(self.page + 1, "next"));
        }
        links.push(link(last, "last"));
        if let Ok(value) = HeaderValue::from_str(&links.join(", ")) {
            headers.insert(LINK, value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_keeps_filters_and_names_neighbours() {
        let page = Page {
            page: 2,
            per_page: 10,
        };
        let uri: Uri = "/incidents?state=triggered&page=2".parse().expect("uri");
        let h = page.headers(&uri, 35);
        assert_eq!(h["x-total-count"], "35");
        let link = h[LINK].to_str().expect("ascii");
        assert!(
            link.contains("</incidents?state=triggered&page=1&per_page=10>; rel=\"first\""),
            "{link}"
        );
        assert!(link.contains("page=1&per_page=10>; rel=\"prev\""), "{link}");
        assert!(link.contains("page=3&per_page=10>; rel=\"next\""), "{link}");
        assert!(link.contains("page=4&per_page=10>; rel=\"last\""), "{link}");
    }

    #[test]
    fn clamps_and_validates() {
        let mut checks = Checks::default();
        let p = PageParams {
            page: None,
            per_page: Some("1000".into()),
        }
        .parse(&mut checks);
        assert_eq!(p.per_page, MAX_PER_PAGE);
        assert!(checks.finish().is_ok());
        let mut checks = Checks::default();
        PageParams {
            page: Some("0".into()),
            per_page: Some("x".into()),
        }
        .parse(&mut checks);
        assert!(checks.finish().is_err());
    }
}
