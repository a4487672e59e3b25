//! Integration tests of the Vigil server: the real server on 127.0.0.1:0, real databases, the
//! real reporter crate as client. One binary, so the suite links once.

mod bad_input;
mod batch;
mod cinder;
mod connections;
mod detection;
mod doctor;
mod guard;
mod harness;
mod invariants;
mod maintenance;
mod metrics;
mod openstack;
mod postgres;
mod replicas;
mod states;
mod storage_faults;
mod story;
mod tls;
mod trust;
mod ui;
mod watch;

/// Runs each named `async fn(Backend)` as a test against every backend. The PostgreSQL tests
/// are skipped when it is not running, except under CI (see `Backend::postgres`).
#[macro_export]
macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::harness::Backend::postgres().await {
                        super::$name(backend.clone()).await;
                        backend.drop_schema().await;
                    }
                }
            )*
        }
    };
}
