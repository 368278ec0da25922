//! Which of the proxy's two HTTP/1.1 paths a test runs on, and
//! `both_paths!` to run one test on each. Included with `#[macro_use]
//! #[path]` by the test binaries that compare the paths.

/// Which of the proxy's two HTTP/1.1 paths a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPath {
    /// The fast path on (the default): it serves plain HTTP/1.1 requests
    /// itself and hands anything else to pingora.
    Fast,
    /// `fast_path = false`: every connection goes through pingora.
    Pingora,
}

impl ProxyPath {
    /// The `[server]` line selecting this path (explicit on both, so a
    /// change of the default changes no test).
    pub fn server_line(self) -> &'static str {
        match self {
            ProxyPath::Fast => "fast_path = true\n",
            ProxyPath::Pingora => "fast_path = false\n",
        }
    }
}

/// Defines the test `$case` twice, as `$case::fast` and `$case::pingora`:
/// the `async fn $case(path: ProxyPath)` of the same name runs once on
/// each path. Both variants make the same assertions; where the paths may
/// legitimately differ, the assertion accepts either ("pingora:" comments).
macro_rules! both_paths {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fast() {
                super::$case(super::ProxyPath::Fast).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pingora() {
                super::$case(super::ProxyPath::Pingora).await;
            }
        }
    };
}
