"""Controller-wide settings from the ConfigMap (keys and defaults as ingress-nginx's ConfigMap).

Durations are seconds as floats: ingress-nginx takes whole seconds, we also accept fractions ("0.5") so that
tests can use short timeouts. Parsing and validation live in `config.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyngress.model.tls import DEFAULT_SSL_CIPHERS


@dataclass(frozen=True, slots=True)
class ProxySettings:
    proxy_connect_timeout: float = 5.0  # proxy-connect-timeout
    proxy_read_timeout: float = 60.0  # proxy-read-timeout: between two reads from the upstream
    proxy_send_timeout: float = 60.0  # proxy-send-timeout: between two writes to the upstream
    keep_alive: float = 75.0  # keep-alive: idle client connection timeout (0: one request per connection)
    keep_alive_requests: int = 1000  # keep-alive-requests: requests per client connection
    client_header_timeout: float = 60.0  # client-header-timeout: to receive a whole request head
    client_body_timeout: float = 60.0  # client-body-timeout: between two reads of the request body
    upstream_keepalive_connections: int = 320  # upstream-keepalive-connections: idle pooled, per worker
    upstream_keepalive_timeout: float = 60.0  # upstream-keepalive-timeout
    upstream_keepalive_requests: int = 10000  # upstream-keepalive-requests
    # As ingress-nginx: forwarded headers are trusted only with use-forwarded-headers: "true", and then only
    # from peers in `trusted_proxies` (proxy-real-ip-cidr); with no proxy-real-ip-cidr, from every peer.
    use_forwarded_headers: bool = False  # use-forwarded-headers
    trusted_proxies: tuple[str, ...] = ()  # proxy-real-ip-cidr, as CIDR strings
    forwarded_for_header: str = "X-Forwarded-For"  # forwarded-for-header
    generate_request_id: bool = True  # generate-request-id
    load_balance: str = "round_robin"  # load-balance: the default algorithm of every route
    session_cookie_salt: str = ""  # session-cookie-salt: keys persistent affinity cookies (share it)
    affinity_table_size: int = 65536  # affinity-table-size: client-ip affinity addresses per route
    enable_underscores_in_headers: bool = False  # enable-underscores-in-headers: else such headers are dropped
    # large-client-header-buffers "4 8k": a request line longer than one buffer gets 414, a head larger than
    # all of them (or one header line longer than one buffer) gets 431.
    header_buffer_size: int = 8192
    header_buffer_count: int = 4
    # -- access log (issue 8; observability.accesslog) --
    enable_access_log: bool = True  # enable-access-log (ours) / disable-access-log (ingress-nginx's key)
    log_format_upstream: str = ""  # log-format-upstream: an nginx-style template; "" means one JSON object
    log_format_escape_json: bool = False  # log-format-escape-json: escape $variables for JSON inside the template
    # issue 9 (L4 streams): ingress-nginx's proxy-stream-* keys, and our UDP flow bounds (docs/l4.md)
    proxy_stream_timeout: float = 600.0  # proxy-stream-timeout: a TCP stream idle both ways this long is closed
    proxy_stream_next_upstream: bool = True  # proxy-stream-next-upstream: a failed connect tries another pod
    proxy_stream_next_upstream_tries: int = 3  # proxy-stream-next-upstream-tries: connect attempts; 0: all pods
    proxy_stream_next_upstream_timeout: float = 600.0  # proxy-stream-next-upstream-timeout: for all attempts
    proxy_stream_responses: int = 0  # proxy-stream-responses: UDP replies per datagram that end a flow; 0: none
    proxy_protocol_header_timeout: float = 5.0  # proxy-protocol-header-timeout: to receive a PROXY header
    udp_flow_timeout: float = 30.0  # udp-flow-timeout (ours): a UDP flow idle this long is forgotten
    udp_flow_table_size: int = 10000  # udp-flow-table-size (ours): flows per listener and worker (one fd each)
    # TLS and HTTPS (issue 4; ingress-nginx's keys and defaults, see config.tls and docs/tls.md)
    ssl_protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")  # ssl-protocols
    ssl_ciphers: str = DEFAULT_SSL_CIPHERS  # ssl-ciphers (TLS 1.2 suites; TLS 1.3 keeps OpenSSL's)
    ssl_redirect: bool = True  # ssl-redirect: plain HTTP to a host with TLS gets 308 to https://
    force_ssl_redirect: bool = False  # force-ssl-redirect: the same for hosts without a certificate
    hsts: bool = True  # hsts
    hsts_max_age: int = 31536000  # hsts-max-age
    hsts_include_subdomains: bool = True  # hsts-include-subdomains
    hsts_preload: bool = False  # hsts-preload
    # (ssl-passthrough relays are closed after proxy_stream_timeout idle too: issue 9's key, above)
    # issue 4, HTTP/2: SETTINGS_MAX_CONCURRENT_STREAMS we announce (nginx's http2_max_concurrent_streams)
    http2_max_concurrent_streams: int = 128  # http2-max-concurrent-streams
    # -- flow and access control (issue 5; docs/flow-control.md) --
    use_proxy_protocol: bool = False  # use-proxy-protocol: PROXY v1/v2 from trusted peers (proxy-real-ip-cidr)
    # (proxy-protocol-header-timeout, shared with the L4 streams, is defined above)
    proxy_body_size: int = 1024 * 1024  # proxy-body-size: the default of every route; 0: unlimited
    limit_req_status_code: int = 429  # limit-req-status-code (nginx's default is 503)
    limit_conn_status_code: int = 429  # limit-conn-status-code (nginx's default is 503)
    global_rate_limit_status_code: int = 429  # global-rate-limit-status-code
    global_rate_limit_fail_closed: bool = False  # global-rate-limit-fail-closed (ours): 503 when Redis is down
    limit_table_size: int = 65536  # limit-table-size (ours): clients remembered per limit, LRU
    whitelist_source_range: tuple[str, ...] = ()  # whitelist-source-range: the default allowlist of every route
    denylist_source_range: tuple[str, ...] = ()  # denylist-source-range: the default denylist
    block_cidrs: tuple[str, ...] = ()  # block-cidrs: refused everywhere (403)
    block_user_agents: tuple[str, ...] = ()  # block-user-agents: exact, ~regex or ~*regex
    block_referers: tuple[str, ...] = ()  # block-referers
    # issue 7: retries, outlier ejection, draining (ingress-nginx's keys where it has them)
    proxy_next_upstream: str = "error timeout"  # proxy-next-upstream: when to try another endpoint
    proxy_next_upstream_tries: int = 3  # proxy-next-upstream-tries: attempts in all (0: no limit)
    proxy_next_upstream_timeout: float = 0.0  # proxy-next-upstream-timeout: no new attempt after it (0: none)
    client_body_buffer_size: int = 8192  # client-body-buffer-size: request body kept for a retry, at most
    retry_budget_percent: float = 20.0  # retry-budget-percent: retries per service over the window (0: off)
    retry_budget_window: float = 10.0  # retry-budget-window
    retry_budget_min_retries: int = 10  # retry-budget-min-retries: allowed per window whatever the traffic
    outlier_consecutive_failures: int = 5  # outlier-consecutive-failures: 5xx/connect failures (0: off)
    outlier_base_ejection_time: float = 30.0  # outlier-base-ejection-time: x times ejected
    outlier_max_ejection_time: float = 300.0  # outlier-max-ejection-time
    max_ejection_percent: int = 50  # max-ejection-percent: of a service's endpoints ejected at once
    worker_shutdown_timeout: float = 240.0  # worker-shutdown-timeout: in-flight to a removed endpoint
    shutdown_grace_period: float = 5.0  # shutdown-grace-period: SIGTERM -> listeners close (readiness fails)

    @property
    def max_head_size(self) -> int:
        return self.header_buffer_size * self.header_buffer_count
