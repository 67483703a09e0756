//! Hot reload: `POST /reload` swaps routes, clusters, listeners and certificates atomically;
//! a bad configuration changes nothing; no request is lost while reloading under load.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use aegis_proxy::{Config, Running};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use support::*;

/// Writes `toml` to `aegis.toml` in `dir` and starts the proxy from that file.
async fn start_from_file(toml: &str, dir: &TestDir) -> (Running, PathBuf) {
    let path = dir.write("aegis.toml", toml);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("invalid test config:\n{e}"));
    let running = aegis_proxy::run_from_file(config, Registry::default(), path.clone())
        .await
        .expect("proxy starts");
    (running, path)
}

async fn post_reload(proxy: &Running) -> Answer {
    let admin = proxy.admin_addr().unwrap();
    let request = Request::post("/reload")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    http(admin, request, false).await.unwrap()
}

/// Requests after a reload go to the new cluster, on the same sockets, over every protocol.
#[tokio::test]
async fn reload_moves_new_requests_to_the_new_cluster_on_the_same_socket() {
    let dir = TestDir::new("reloadswap");
    let a = origin(Behaviour::Answer).await;
    let b = origin(Behaviour::Answer).await;
    let (proxy, path) = start_from_file(&matrix_config("", &one_cluster(a.addr)), &dir).await;
    let before = (proxy.listener_addr("plain"), proxy.listener_addr("secure"));
    for proto in PROTOCOLS {
        let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
        assert_eq!(answer.status, 200, "{proto:?}");
    }
    assert_eq!((a.hits(), b.hits()), (5, 0));

    std::fs::write(&path, matrix_config("", &one_cluster(b.addr))).unwrap();
    let answer = post_reload(&proxy).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        "reloaded: 1 clusters; listeners added [], updated [\"plain\", \"secure\"], removed []\n"
    );
    let after = (proxy.listener_addr("plain"), proxy.listener_addr("secure"));
    assert_eq!(after, before, "same sockets");
    for proto in PROTOCOLS {
        let answer = proto.send(&proxy, &dir, &Sent::get("/")).await.unwrap();
        assert_eq!(answer.status, 200, "{proto:?}");
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test]
async fn a_bad_reload_keeps_serving_and_names_key_and_line() {
    let dir = TestDir::new("reloadbad");
    let a = origin(Behaviour::Answer).await;
    let (proxy, path) = start_from_file(&config(None, &[a.addr], "", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let broken = config(None, &[a.addr], "", "").replace(&a.addr.to_string(), "127.0.0.1:99999");
    std::fs::write(&path, broken).unwrap();

    let answer = post_reload(&proxy).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.body,
        "reload rejected, still running the previous configuration:\n\
         clusters.api.endpoints[0], line 14: \"127.0.0.1:99999\" has an invalid port\n"
    );
    assert_eq!(http(addr, get("/"), false).await.unwrap().status, 200);
    assert_eq!(a.hits(), 1);
    let text = metrics(&proxy).await;
    assert_eq!(
        metric(&text, "aegis_config_reloads_total{result=\"error\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let dir = TestDir::new("reloadlisteners");
    let a = origin(Behaviour::Answer).await;
    let (proxy, path) = start_from_file(&config(None, &[a.addr], "", ""), &dir).await;
    let public = proxy.listener_addr("public").unwrap();
    let second = "\n[[listeners]]\nname = \"second\"\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(
        &path,
        format!("{}{second}", config(None, &[a.addr], "", "")),
    )
    .unwrap();
    let answer = post_reload(&proxy).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let added = proxy
        .listener_addr("second")
        .expect("second listener bound");
    assert_eq!(http(added, get("/"), false).await.unwrap().status, 200);

    std::fs::write(&path, config(None, &[a.addr], "", "")).unwrap();
    let answer = post_reload(&proxy).await;
    assert!(
        answer.body.contains("removed [\"second\"]"),
        "{}",
        answer.body
    );
    assert_eq!(proxy.listener_addr("second"), None);
    assert!(tokio::net::TcpStream::connect(added).await.is_err());
    assert_eq!(http(public, get("/"), false).await.unwrap().status, 200);
}

#[tokio::test]
async fn reload_rereads_the_certificate_files() {
    let dir = TestDir::new("reloadcerts");
    let a = origin(Behaviour::Answer).await;
    let (proxy, _) = start_from_file(&config(Some(TLS), &[a.addr], "", ""), &dir).await;
    let addr = proxy.listener_addr("public").unwrap();
    let old_roots = dir.roots();
    let old_client = client_tls(old_roots, Groups::PqOnly, &[b"h2"]);
    assert_eq!(
        https(addr, old_client.clone(), get("/"))
            .await
            .unwrap()
            .status,
        200
    );

    // A new CA and server certificate replace the files; the proxy serves them after reload.
    aegis_proxy::demo::write_certs(&dir.path).unwrap();
    assert_eq!(post_reload(&proxy).await.status, 200);
    let new_client = client_tls(dir.roots(), Groups::PqOnly, &[b"h2"]);
    let answer = https(addr, new_client, get("/")).await.unwrap();
    assert_eq!((answer.status, answer.group), (200, Some("X25519MLKEM768")));
    assert!(https(addr, old_client, get("/")).await.is_err());
}

/// Requests in flight and on kept-alive connections while the configuration is swapped ten
/// times are all answered, each reaching an origin once; one client per protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    let dir = Arc::new(TestDir::new("reloadload"));
    let a = origin(Behaviour::Answer).await;
    let b = origin(Behaviour::Answer).await;
    let (proxy, path) = start_from_file(&matrix_config("", &one_cluster(a.addr)), &dir).await;
    let proxy = Arc::new(proxy);
    let done = Arc::new(AtomicBool::new(false));
    let (sent, ok) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for proto in PROTOCOLS {
        let (done, sent, ok) = (done.clone(), sent.clone(), ok.clone());
        let (proxy, dir) = (proxy.clone(), dir.clone());
        clients.push(tokio::spawn(async move {
            // Keep-alive connections, so requests straddle the swap on one connection.
            let mut client = proto.keep_alive(&proxy, &dir).await.unwrap();
            while !done.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                if client.get("/").await.unwrap() == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for round in 0..10 {
        let to = if round % 2 == 0 { b.addr } else { a.addr };
        std::fs::write(&path, matrix_config("", &one_cluster(to))).unwrap();
        assert_eq!(post_reload(&proxy).await.status, 200);
    }
    done.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent > 10, "load ran during the reloads ({sent} requests)");
    assert_eq!(
        ok.load(Ordering::SeqCst),
        sent,
        "every request answered 200"
    );
    assert_eq!(
        a.hits() + b.hits(),
        sent,
        "every request reached an origin once"
    );
    assert!(b.hits() > 0, "new configuration served");
}
