//! The pass phase: a request the cache may not answer goes upstream and
//! its response streams back, untouched but for hop-by-hop fields, `Via`,
//! `Cache-Status` and on-the-fly compression.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response};
use perfgate_cache::compress::Encoding;
use perfgate_observe::{CacheEvent, InvalidationSource};

use crate::compressing::{self, Compressing};
use crate::context::RequestContext;
use crate::context::{Conn, Outgoing};
use crate::gateway::{CACHE_STATUS, Gateway};
use crate::route::Route;
use perfgate_http::body::{Body, Watched};
use perfgate_http::error::GatewayError;
use perfgate_http::headers::{append_via, strip_hop_by_hop, strip_tag_headers};

impl Gateway {
    /// Streams a request to the upstream and the response back, untouched
    /// but for hop-by-hop fields.
    /// An unsafe method that succeeds invalidates what it changed (RFC 9111
    /// §4.4).
    pub(crate) async fn pass(
        self: &Arc<Self>,
        route: Arc<Route>,
        req: Request<Body>,
        conn: &Conn,
        cx: &mut RequestContext,
        label: HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        cx.timing.count(CacheEvent::bypass);
        let route = &*route;
        let unsafe_req = (!req.method().is_safe() && self.tiers.l1.is_some())
            .then(|| (req.uri().clone(), req.headers().clone()));
        let rsp = self.stream_through(route, req, conn, cx, label).await?;
        // RFC 9111 §4.4: a successful unsafe request invalidates its
        // target URI, the same-host Location/Content-Location URIs,
        // and the tags the route declares.
        if let Some((uri, headers)) = unsafe_req
            && (rsp.status().is_success() || rsp.status().is_redirection())
        {
            let targets = self.unsafe_targets(route, &uri, &headers, rsp.headers(), conn);
            // This instance's L1 now (read-your-writes here); L2 and
            // the other instances in the background, so a slow Redis
            // never holds the client's response.
            self.tiers.apply_l1(&targets);
            let gw = self.clone();
            tokio::spawn(async move {
                gw.tiers
                    .invalidate_shared(targets, InvalidationSource::automatic)
                    .await;
            });
        }
        Ok(rsp)
    }

    /// Streams the request upstream and the response back.
    async fn stream_through(
        &self,
        route: &Route,
        req: Request<Body>,
        conn: &Conn,
        cx: &mut RequestContext,
        label: HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        let (parts, body) = req.into_parts();
        let enc = if parts.method == Method::HEAD {
            Encoding::Identity
        } else {
            self.compressor
                .negotiate(parts.headers.get(http::header::ACCEPT_ENCODING))
        };
        let rsp = self
            .forward(
                route,
                Outgoing {
                    method: parts.method,
                    uri: &parts.uri,
                    headers: parts.headers,
                    version: parts.version,
                },
                conn,
                body,
                &mut cx.timing,
            )
            .await
            .map_err(|e| e.to_gateway())?;
        Ok(self.stream_response(route, rsp, label, enc))
    }

    /// A streamed upstream response: hop-by-hop fields removed, `Via` and
    /// `Cache-Status` added, the body watched for stalls, counted, and
    /// compressed on the fly when `enc` asks for it.
    pub(crate) fn stream_response(
        &self,
        route: &Route,
        rsp: Response<perfgate_upstream::upstream::UpstreamBody>,
        label: HeaderValue,
        enc: Encoding,
    ) -> Response<Body> {
        let (parts, body) = rsp.into_parts();
        let metrics = self.metrics.clone();
        let body = Watched::new(body, route.body_idle_timeout, move |n| {
            metrics.bytes_in(n);
            metrics.bytes_out(n, 0);
        });
        self.streamed(Response::from_parts(parts, Body::stream(body)), label, enc)
    }

    /// Finishes a streamed response whose body is already watched.
    pub(crate) fn streamed(
        &self,
        rsp: Response<Body>,
        label: HeaderValue,
        enc: Encoding,
    ) -> Response<Body> {
        let (mut parts, body) = rsp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if !self.expose_tag_headers {
            strip_tag_headers(&mut parts.headers);
        }
        append_via(&mut parts.headers, &self.via_h1);
        parts.headers.insert(CACHE_STATUS, label);
        let body =
            match compressing::prepare(&self.compressor, enc, parts.status, &mut parts.headers) {
                Some(encoder) => Body::stream(Compressing::new(body, encoder)),
                None => body,
            };
        Response::from_parts(parts, body)
    }
}
