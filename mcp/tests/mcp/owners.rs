//! Owners through the tools (issue 15): the analytics tools pass `owner`
//! to the master and answer only that owner's tests; `get_failures` shows
//! owners and quarantine marks; `get_report` with `group_by: "owner"` lists
//! the latest run's failures under one heading per owner.

use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::*;

const CART: &str = "@acme/cart";
const PAY: &str = "@acme/pay";

/// Two runs of project "owned": each test fails in one and passes in the
/// other, so all are flaky on the one commit; `t::cart_a` is quarantined
/// in the second.
async fn seed(app: &TestApp) {
    let owned = |id: &str, outcome: &str, owners: &[&str], quarantined: bool| -> Value {
        let mut c = case(
            id,
            outcome,
            0.5,
            (outcome == "failed").then_some("boom"),
            None,
        );
        c["owners"] = json!(owners);
        c["quarantined"] = json!(quarantined);
        c
    };
    let start = Utc::now() - chrono::Duration::minutes(10);
    for (i, (cart, pay)) in [("passed", "failed"), ("failed", "passed")]
        .into_iter()
        .enumerate()
    {
        let cases = vec![
            owned("t::cart_a", cart, &[CART], i == 1),
            owned("t::cart_b", cart, &[CART], false),
            owned("t::pay_a", pay, &[PAY], false),
            owned("t::both", cart, &[CART, PAY], false),
            owned("t::nobody", pay, &[], false),
            // Passing ones, so that no run is mostly failures (an outage).
            owned("t::fine_1", "passed", &[], false),
            owned("t::fine_2", "passed", &[], false),
        ];
        let run_id = format!("owned-{i}");
        let at = start + chrono::Duration::minutes(i as i64);
        app.post_run(&run_payload(&run_id, "owned", "main", "w1", at, cases))
            .await;
    }
}

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .filter_map(|t| t["test_id"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_take_owner_and_the_report_groups_failures_by_owner() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let client = mcp_client(&app.base, 30).await;

    let flaky = ok_json(
        "get_flaky_tests",
        &call(
            &client,
            "get_flaky_tests",
            json!({"project": "owned", "owner": CART}),
        )
        .await,
    );
    assert_eq!(
        ids(&flaky["tests"]),
        ["t::both", "t::cart_a", "t::cart_b"],
        "{flaky}"
    );
    let all = ok_json(
        "get_flaky_tests",
        &call(&client, "get_flaky_tests", json!({"project": "owned"})).await,
    );
    assert_eq!(all["total"], 5, "{all}");

    let stats = ok_json(
        "get_failure_stats",
        &call(
            &client,
            "get_failure_stats",
            json!({"project": "owned", "owner": PAY}),
        )
        .await,
    );
    assert_eq!(ids(&stats["tests"]), ["t::both", "t::pay_a"], "{stats}");

    let slow = ok_json(
        "get_slow_tests",
        &call(
            &client,
            "get_slow_tests",
            json!({"project": "owned", "owner": PAY, "runs": 2, "recent": 1}),
        )
        .await,
    );
    assert_eq!(ids(&slow["slowest"]), ["t::both", "t::pay_a"], "{slow}");

    let clusters = ok_json(
        "get_failure_clusters",
        &call(
            &client,
            "get_failure_clusters",
            json!({"project": "owned", "owner": PAY}),
        )
        .await,
    );
    let mut tests: Vec<String> = clusters["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .flat_map(|c| c["tests"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    tests.sort();
    assert_eq!(tests, ["t::both", "t::pay_a"], "{clusters}");

    // The master's refusal comes back naming the argument.
    let e = err_text(
        "get_flaky_tests",
        &call(
            &client,
            "get_flaky_tests",
            json!({"owner": "o".repeat(300)}),
        )
        .await,
    );
    assert!(e.contains("owner"), "{e}");

    // The latest run's failures carry owners and the quarantine mark.
    let f = ok_json(
        "get_failures",
        &call(&client, "get_failures", json!({"run_id": "owned-1"})).await,
    );
    assert_eq!(f["run"]["quarantined_failures"], 1, "{f}");
    let cart_a = f["failures"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["test_id"] == "t::cart_a"))
        .cloned()
        .unwrap_or_else(|| panic!("t::cart_a in {f}"));
    assert_eq!(
        (&cart_a["owners"], &cart_a["quarantined"]),
        (&json!([CART]), &json!(true))
    );

    // The report, grouped by owner: one heading per owner, the shared test
    // under both, the marks shown.
    let r = call(
        &client,
        "get_report",
        json!({"project": "owned", "group_by": "owner"}),
    )
    .await;
    let (_, _, html) = html_of(&r);
    let cart_at = html
        .find("Owner: @acme/cart (3)")
        .unwrap_or_else(|| panic!("cart heading"));
    let pay_at = html
        .find("Owner: @acme/pay (1)")
        .unwrap_or_else(|| panic!("pay heading"));
    assert!(cart_at < pay_at, "owners sorted");
    let cart_part = &html[cart_at..pay_at];
    for id in ["t::cart_a", "t::cart_b", "t::both"] {
        assert!(cart_part.contains(id), "{id} under the cart team");
    }
    let pay_part = &html[pay_at..];
    let pay_part = &pay_part[..pay_part.find("</section>").unwrap_or(pay_part.len())];
    assert!(
        pay_part.contains("t::both"),
        "the shared test under both owners"
    );
    assert!(!pay_part.contains("t::cart_a"), "{pay_part}");
    assert!(html.contains("⏸ quarantined"), "the mark is shown");
    assert!(
        html.contains("1 of these failures were quarantined"),
        "the count is shown"
    );
    let plain = call(&client, "get_report", json!({"project": "owned"})).await;
    let (_, _, plain) = html_of(&plain);
    assert!(!plain.contains("Owner: "), "not grouped unless asked");
    let e = err_text(
        "get_report",
        &call(
            &client,
            "get_report",
            json!({"project": "owned", "group_by": "team"}),
        )
        .await,
    );
    assert!(e.contains("group_by"), "{e}");
}
