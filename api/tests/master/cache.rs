//! The read cache: repeated reads are answered from memory, and never with
//! anything a write has changed since.

use serde_json::{Value, json};

use crate::helpers::*;

/// GET `path`: (X-Cache header, status, JSON).
async fn get(app: &TestApp, path: &str) -> (String, u16, Value) {
    let r = app
        .http
        .get(format!("{}{path}", app.base()))
        .send()
        .await
        .expect("GET reaches the master");
    let cache = r
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string();
    let status = r.status().as_u16();
    (cache, status, r.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| a.iter().filter_map(|r| r["run_id"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_reads_come_from_memory_until_a_write() {
    let mut app = TestApp::spawn().await;
    let first = synthetic_run("cache", 1, 30);
    publish_direct(&app.nats.url(), std::slice::from_ref(&first), true).await;
    app.wait_run("cache-00001").await;

    // A repeat is a hit, with the same answer and headers.
    let (c1, s1, list1) = get(&app, "/results?limit=1").await;
    let (c2, s2, list2) = get(&app, "/results?limit=1").await;
    assert_eq!(
        (c1.as_str(), c2.as_str(), s1, s2),
        ("miss", "hit", 200, 200)
    );
    assert_eq!(list1, list2);
    assert_eq!(ids(&list2), ["cache-00001"]);
    let page = "/results/cache-00001?cases_limit=10";
    let (_, _, p1) = get(&app, page).await;
    let r = app
        .http
        .get(format!("{}{page}", app.base()))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.headers()["x-cache"], "hit");
    assert_eq!(r.headers()["content-type"], "application/json");
    let cursor = r.headers()["x-next-cursor"]
        .to_str()
        .expect("cursor")
        .to_string();
    assert_eq!(r.json::<Value>().await.expect("json"), p1);
    assert_eq!(p1["next_cursor"], cursor.as_str());

    // Errors are not kept: a run that is not there yet is a 404 each time,
    // and appears as soon as it is stored.
    let (c, s, _) = get(&app, "/results/cache-00002").await;
    assert_eq!((c.as_str(), s), ("none", 404));
    let second = synthetic_run("cache", 2, 30);
    publish_direct(&app.nats.url(), std::slice::from_ref(&second), true).await;
    app.wait_run("cache-00002").await;
    // The list read before the write is not served after it.
    let (c, _, list) = get(&app, "/results?limit=1").await;
    assert_eq!((c.as_str(), ids(&list)), ("miss", vec!["cache-00002"]));

    // A write through the API (marking a flaky test fixed) also counts.
    let (_, _, before) = get(&app, "/flaky?project=synthetic").await;
    let (c, _, _) = get(&app, "/flaky?project=synthetic").await;
    assert_eq!(c, "hit");
    let (status, _) = app
        .post(
            "/flaky/clear",
            &json!({"project": "synthetic", "test_id": "tests/test_3.py::test_3"}),
        )
        .await;
    assert_eq!(status, 200);
    let (c, _, after) = get(&app, "/flaky?project=synthetic").await;
    assert_eq!(c, "miss");
    assert_eq!(before, after, "nothing was flaky, and still is not");

    // Capacity 0 turns it off.
    app.stop_master().await;
    app.start_master_with(|c| c.read_cache_mib = 0).await;
    for _ in 0..2 {
        let (c, s, list) = get(&app, "/results?limit=1").await;
        assert_eq!(
            (c.as_str(), s, ids(&list)),
            ("none", 200, vec!["cache-00002"])
        );
    }
}

/// A run stored for one project leaves the other projects' answers and the
/// pages of stored runs in the cache, and drops what it changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_one_project_keeps_the_others_answers() {
    let app = TestApp::spawn().await;
    let run = |project: &str, tag: &str, i: usize| {
        let mut r = synthetic_run(tag, i, 30);
        r.0.project = project.into();
        r
    };
    let first = [run("alpha", "pa", 1), run("beta", "pb", 1)];
    publish_direct(&app.nats.url(), &first, true).await;
    app.wait_run("pa-00001").await;
    app.wait_run("pb-00001").await;
    let kept = [
        "/results?project=alpha",
        "/results/pa-00001",
        "/results/pb-00001",
        "/trend?project=alpha",
        "/failures/stats?project=alpha",
        "/flaky?project=alpha",
        "/compare?base=pa-00001&head=pb-00001",
    ];
    let dropped = ["/results?project=beta", "/results", "/trend?project=beta"];
    for path in kept.iter().chain(&dropped) {
        let (_, s, _) = get(&app, path).await;
        let (c, _, _) = get(&app, path).await;
        assert_eq!((s, c.as_str()), (200, "hit"), "{path}");
    }

    publish_direct(&app.nats.url(), &[run("beta", "pb", 2)], true).await;
    app.wait_run("pb-00002").await;
    for path in kept {
        let (c, _, _) = get(&app, path).await;
        assert_eq!(c, "hit", "{path} does not depend on beta's new run");
    }
    for path in dropped {
        let (c, _, body) = get(&app, path).await;
        assert_eq!(c, "miss", "{path} depends on beta's new run");
        assert!(body.to_string().contains("pb-00002"), "{path}: {body}");
    }
    // Answers that depend on the clock are not kept.
    for _ in 0..2 {
        let (c, s, _) = get(&app, "/failures/stats?project=alpha&days=7").await;
        assert_eq!((s, c.as_str()), (200, "miss"));
    }
}

/// Many identical requests arriving together after a write are computed
/// once; the others get the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_are_computed_once() {
    let app = TestApp::spawn().await;
    let big = synthetic_run("sf", 1, 20_000);
    publish_direct(&app.nats.url(), std::slice::from_ref(&big), true).await;
    app.wait_run("sf-00001").await;
    // Slow to compute (every case of the run), small to answer.
    let path = "/tests/slow?project=synthetic&limit=5";
    let answers = futures::future::join_all((0..16).map(|_| get(&app, path))).await;
    let misses = answers.iter().filter(|(c, _, _)| c == "miss").count();
    let kinds: Vec<&str> = answers.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(misses, 1, "{kinds:?}");
    assert!(
        kinds.iter().all(|c| ["miss", "shared", "hit"].contains(c)),
        "{kinds:?}"
    );
    let first = &answers[0].2;
    assert_eq!(first["slowest"].as_array().map(Vec::len), Some(5));
    assert!(
        answers
            .iter()
            .all(|(_, s, body)| *s == 200 && body == first)
    );
}
