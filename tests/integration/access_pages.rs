//! The access pages (`/.wardgate/access/…`) with a plain HTTP client, over real TLS: a request
//! asked on its page and approved on the approvals page opens the route; what no browser of
//! the person would send (a forged post, a self-approval, a page of a role they do not hold)
//! is refused with its fixed page; without a policy the pages do not exist. Break-glass end to
//! end in Chromium is `browser::break_glass_in_chromium…`.

use http::{Method, Request, StatusCode, header};

use crate::browser::{
    Page, assert_page_headers, assert_refusal_page, encode, fetch, form_post, hidden,
    login_gateway, post_page,
};
use crate::harness::*;
use crate::policy::{config, link, person};

/// A browser holding `token`'s session: its cookies (session, then CSRF) and the CSRF field.
struct Browser<'a> {
    gateway: &'a TestGateway,
    cookies: String,
    csrf: String,
}

impl<'a> Browser<'a> {
    /// Opens the home page with the session cookie, which sets the CSRF cookie.
    async fn of(gateway: &'a TestGateway, token: &str) -> Self {
        let mut browser = Self {
            gateway,
            cookies: format!("__Host-wardgate-session={token}"),
            csrf: String::new(),
        };
        let home = browser.get("/.wardgate/").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.html);
        let set = home.headers[header::SET_COOKIE].to_str().unwrap();
        browser.cookies = format!("{}; {}", browser.cookies, set.split(';').next().unwrap());
        browser.csrf = hidden(&home.html, "csrf");
        browser
    }

    /// A page navigation (`Accept: text/html`) with the cookies.
    async fn get(&self, path: &str) -> Page {
        let request = Request::builder()
            .uri(self.gateway.url(path))
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
            .header(header::COOKIE, &self.cookies)
            .body(full(""))
            .unwrap();
        fetch(self.gateway, request).await
    }

    /// The request form posted for one category of `patient`, with a reason, for `duration`.
    async fn ask(&self, patient: &str, category: &str, reason: &str, duration: &str) -> Page {
        let category = format!("category.{category}");
        let fields = [
            ("patient", patient),
            (category.as_str(), "on"),
            ("reason", reason),
            ("duration", duration),
        ];
        self.post("/.wardgate/access/request", &fields).await
    }

    /// The approvals page's answer to `request`: `verdict` (its button) with `comment`.
    async fn decide(&self, request: &str, verdict: &str, comment: &str) -> Page {
        let fields = [
            ("request", request),
            ("verdict", verdict),
            ("comment", comment),
        ];
        self.post("/.wardgate/access/approvals", &fields).await
    }

    /// A form post from the gateway's own page: cookies, CSRF field, same-origin `Origin`.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        post_page(self.gateway, path, &self.cookies, &self.csrf, fields).await
    }
}

/// The id of the first request listed on a page.
fn first_request(page: &Page) -> String {
    let marker = r#"<article class="request" id="request-"#;
    let start = page
        .html
        .find(marker)
        .unwrap_or_else(|| panic!("{}", page.html))
        + marker.len();
    page.html[start..].split('"').next().unwrap().to_owned()
}

/// The text of the first element with `class` on a page.
fn first(page: &Page, class: &str) -> String {
    let marker = format!(r#"class="{class}">"#);
    let start = page
        .html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {class}: {}", page.html))
        + marker.len();
    page.html[start..].split('<').next().unwrap().to_owned()
}

async fn gateway() -> (MockUpstream, TestGateway) {
    let upstream = MockUpstream::recording().await;
    let gateway = TestGateway::start(&config(&upstream.url())).await;
    (upstream, gateway)
}

#[tokio::test]
async fn a_request_asked_on_its_page_and_approved_on_the_approvals_page_opens_the_route() {
    let (_upstream, gateway) = gateway().await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    let carl = person(&gateway, "carl", &["chief-physician"]).await;
    link(&gateway, "dana", "p7").await;
    let dana = Browser::of(&gateway, &dana).await;
    let carl = Browser::of(&gateway, &carl).await;
    let labs = "/api/patients/p7/labs/1";

    // The refusal of the patient route, for a browser: a page that links to the request form.
    let refused = dana.get(labs).await;
    assert_refusal_page(&refused, StatusCode::FORBIDDEN, "WG-POLICY-001");
    assert_eq!(
        refused.headers[header::LINK],
        r#"</.wardgate/api/access/requests>; rel="access-request""#
    );
    let ask_link =
        r#"<a id="request-access" href="/.wardgate/access/request?patient=p7&amp;category=labs">"#;
    assert!(refused.html.contains(ask_link), "{}", refused.html);

    // The form, pre-filled: only the categories a dermatologist may request.
    let form = dana
        .get("/.wardgate/access/request?patient=p7&category=labs")
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.html);
    assert_page_headers(&form);
    assert!(
        form.html
            .contains(r#"name="patient" type="text" value="p7""#),
        "{}",
        form.html
    );
    assert!(
        form.html
            .contains(r#"id="category-labs" name="category.labs" checked>"#),
        "{}",
        form.html
    );
    // Also the ones of her care-team roles (for patients whose team she is not on); never
    // the sensitive one.
    assert_eq!(
        form.html.matches(r#"type="checkbox""#).count(),
        4,
        "{}",
        form.html
    );
    assert!(!form.html.contains("mental-health"), "{}", form.html);

    // A category she may not request: the form again, with what she typed.
    let again = dana
        .ask("p7", "mental-health", "suspected drug rash", "10m")
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.html);
    assert_page_headers(&again);
    assert!(
        again.html.contains(r#"id="access-error""#),
        "{}",
        again.html
    );
    assert!(
        again.html.contains(">suspected drug rash</textarea>"),
        "{}",
        again.html
    );

    let done = dana.ask("p7", "labs", "suspected drug rash", "10m").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    assert_eq!(done.headers[header::LOCATION], "/.wardgate/access/mine");
    let mine = dana.get("/.wardgate/access/mine").await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(first(&mine, "status"), "pending");
    let id = first_request(&mine);

    // The approver sees it with who asks, and approves with a comment.
    let queue = carl.get("/.wardgate/access/approvals").await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.html);
    assert_eq!(first_request(&queue), id);
    assert_eq!(first(&queue, "requester"), "dana");
    let approved = carl.decide(&id, "approve", "for this episode").await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.html);
    assert_eq!(
        approved.headers[header::LOCATION],
        "/.wardgate/access/approvals"
    );
    let queue = carl.get("/.wardgate/access/approvals").await;
    assert!(queue.html.contains(r#"<p id="none">"#), "{}", queue.html);

    let open = dana.get(labs).await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.html);
    let mine = dana.get("/.wardgate/access/mine").await;
    assert_eq!(first(&mine, "status"), "active");
    assert_eq!(first(&mine, "comment"), "for this episode");
    assert!(first(&mine, "ends").ends_with(" GMT"), "{}", mine.html);
}

#[tokio::test]
async fn a_self_approval_posted_through_the_page_is_refused_with_its_code() {
    let (_upstream, gateway) = gateway().await;
    let carl = person(&gateway, "carl", &["chief-physician"]).await;
    let carl = Browser::of(&gateway, &carl).await;
    let done = carl.ask("p9", "labs", "second opinion", "1h").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    let id = first_request(&carl.get("/.wardgate/access/mine").await);
    let queue = carl.get("/.wardgate/access/approvals").await;
    assert!(
        !queue.html.contains(&id),
        "his own is not listed: {}",
        queue.html
    );

    for verdict in ["approve", "deny"] {
        let own = carl.decide(&id, verdict, "").await;
        assert_refusal_page(&own, StatusCode::FORBIDDEN, "WG-GRANT-002");
        assert!(
            own.html
                .contains("nobody approves or denies their own access request"),
            "{}",
            own.html
        );
    }
    let mine = carl.get("/.wardgate/access/mine").await;
    assert_eq!(first(&mine, "status"), "pending");
}

#[tokio::test]
async fn forged_posts_and_foreign_roles_get_the_fixed_refusals() {
    let (upstream, gateway) = gateway().await;
    let dana = person(&gateway, "dana", &["dermatologist"]).await;
    let carl = person(&gateway, "carl", &["chief-physician"]).await;
    let dana = Browser::of(&gateway, &dana).await;
    let carl = Browser::of(&gateway, &carl).await;
    let done = dana.ask("p7", "labs", "suspected drug rash", "10m").await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    let id = first_request(&dana.get("/.wardgate/access/mine").await);

    // An approval forged by another site in carl's browser: his cookies, no token or another
    // origin. Refused before the form is read; nothing approved.
    let body = format!("request={id}&verdict=approve&comment=");
    let with_token = format!("csrf={}&{body}", encode(&carl.csrf));
    let cookies = carl.cookies.as_str();
    for (case, headers, body) in [
        ("no token", vec![("cookie", cookies)], body.clone()),
        (
            "cross-site Origin",
            vec![("cookie", cookies), ("origin", "https://evil.example")],
            with_token.clone(),
        ),
        (
            "cross-site fetch",
            vec![("cookie", cookies), ("sec-fetch-site", "cross-site")],
            with_token,
        ),
    ] {
        let post = form_post(&gateway, "/.wardgate/access/approvals", &headers, body);
        let page = fetch(&gateway, post).await;
        assert_refusal_page(&page, StatusCode::FORBIDDEN, "WG-AUTH-020");
        assert!(page.html.contains("could not be verified"), "{case}");
    }
    let mine = dana.get("/.wardgate/access/mine").await;
    assert_eq!(first(&mine, "status"), "pending");

    // The pages of roles she does not hold: the refusals of the JSON API, as pages.
    for (path, code) in [
        ("/.wardgate/access/approvals", "WG-GRANT-003"),
        ("/.wardgate/access/reviews", "WG-GRANT-009"),
        ("/.wardgate/access/break-glass", "WG-GRANT-008"),
    ] {
        let page = dana.get(path).await;
        assert_refusal_page(&page, StatusCode::FORBIDDEN, code);
    }
    let page = dana.decide(&id, "approve", "").await;
    assert_refusal_page(&page, StatusCode::FORBIDDEN, "WG-GRANT-002");
    let other = "0".repeat(32);
    let page = carl.decide(&other, "approve", "").await;
    assert_refusal_page(&page, StatusCode::NOT_FOUND, "WG-GRANT-001");
    let page = carl.decide(&id, "maybe", "").await;
    assert_refusal_page(&page, StatusCode::BAD_REQUEST, "WG-BODY-005");
    let operator = person(&gateway, "olga", &["operator"]).await;
    let operator = Browser::of(&gateway, &operator).await;
    let page = operator.get("/.wardgate/access/request").await;
    assert_refusal_page(&page, StatusCode::FORBIDDEN, "WG-POLICY-002");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn every_access_page_carries_the_page_headers_and_wants_a_session() {
    let (_upstream, gateway) = gateway().await;
    let all = person(
        &gateway,
        "ada",
        &["physician", "chief-physician", "privacy-officer"],
    )
    .await;
    let ada = Browser::of(&gateway, &all).await;
    let home = ada.get("/.wardgate/").await;
    let pages = [
        "/.wardgate/access/request",
        "/.wardgate/access/mine",
        "/.wardgate/access/approvals",
        "/.wardgate/access/break-glass",
        "/.wardgate/access/reviews",
    ];
    for path in pages {
        let page = ada.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.html);
        assert_page_headers(&page);
        assert!(!page.html.contains("<script"), "{path}");
        assert!(!page.html.contains("style="), "{path}");
        assert!(
            home.html.contains(&format!(r#"href="{path}""#)),
            "{path}: {}",
            home.html
        );
        if path.ends_with("request") || path.ends_with("break-glass") {
            assert!(page.html.contains(r#"name="csrf""#), "{path}");
        }
    }

    // Without a session: to the login page and back; a post is refused.
    for path in pages {
        let page = fetch(&gateway, get(&gateway.url(&format!("{path}?patient=p1")))).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            page.headers[header::LOCATION].to_str().unwrap(),
            format!("/.wardgate/login?return_to={path}%3Fpatient%3Dp1&reason=login")
        );
    }
    let post = form_post(&gateway, "/.wardgate/access/request", &[], String::new());
    assert_refusal_page(
        &fetch(&gateway, post).await,
        StatusCode::UNAUTHORIZED,
        "WG-SESSION-001",
    );
    let put = Request::builder()
        .method(Method::PUT)
        .uri(gateway.url("/.wardgate/access/mine"))
        .body(full(""))
        .unwrap();
    assert_refusal_page(
        &fetch(&gateway, put).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "WG-METHOD-001",
    );

    // A second factor older than reauth_within: the break-glass page sends to the step-up,
    // which comes back to it.
    gateway.advance(6 * 60);
    let stale = ada.get("/.wardgate/access/break-glass?patient=p7").await;
    assert_eq!(stale.status, StatusCode::SEE_OTHER, "{}", stale.html);
    assert_eq!(
        stale.headers[header::LOCATION],
        "/.wardgate/login?return_to=/.wardgate/access/break-glass%3Fpatient%3Dp7&reason=step-up"
    );
    let glass = [
        ("patient", "p7"),
        ("reason", "unconscious"),
        ("text", "found unresponsive"),
    ];
    let posted = ada.post("/.wardgate/access/break-glass", &glass).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.html);
    assert_eq!(
        posted.headers[header::LOCATION],
        stale.headers[header::LOCATION]
    );
    let mine = ada.get("/.wardgate/access/mine").await;
    assert!(
        !mine.html.contains(r#"<article class="request""#),
        "nothing opened"
    );
}

#[tokio::test]
async fn without_a_policy_the_access_pages_do_not_exist() {
    let (_upstream, gateway) = login_gateway().await;
    let token = person(&gateway, "dora", &["physician"]).await;
    let dora = Browser::of(&gateway, &token).await;
    let home = dora.get("/.wardgate/").await;
    assert!(!home.html.contains("/.wardgate/access/"), "{}", home.html);
    for path in [
        "/.wardgate/access/request",
        "/.wardgate/access/mine",
        "/.wardgate/access/approvals",
        "/.wardgate/access/break-glass",
        "/.wardgate/access/reviews",
        "/.wardgate/access/nowhere",
    ] {
        assert_refusal_page(&dora.get(path).await, StatusCode::NOT_FOUND, "WG-AUTH-006");
    }
    let page = dora.decide("0", "approve", "").await;
    assert_refusal_page(&page, StatusCode::NOT_FOUND, "WG-AUTH-006");
}
