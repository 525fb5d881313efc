//! CODEOWNERS through the real agent and pytest: each case carries the
//! owners of its file, found from pytest's classname (no `file`
//! attribute in its default report), from a subdirectory of the
//! repository too.

use serde_json::Value;

use super::{agent, dead_url, stderr};

fn owners_by_name(v: &Value) -> Vec<(String, Vec<String>)> {
    let mut o: Vec<(String, Vec<String>)> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["owners"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    o.sort();
    o
}

#[test]
fn cases_carry_the_owners_of_their_files() {
    let dir = tempfile::tempdir().expect("dir");
    let repo = dir.path();
    let svc = repo.join("services/cart");
    std::fs::create_dir_all(svc.join("tests/api")).expect("dirs");
    std::fs::create_dir_all(repo.join(".github")).expect(".github");
    std::fs::write(
        repo.join(".github/CODEOWNERS"),
        "*  @acme/everyone\n/services/cart/ @acme/cart\n/services/cart/tests/api/ @acme/api @alice\n*.md @acme/docs\n",
    )
    .expect("CODEOWNERS");
    std::fs::write(svc.join("pytest.ini"), "[pytest]\n").expect("ini");
    std::fs::write(
        svc.join("tests/test_total.py"),
        "def test_total():\n    assert 1 == 2\n",
    )
    .expect("test");
    std::fs::write(
        svc.join("tests/api/test_routes.py"),
        "class TestRoutes:\n    def test_get(self):\n        pass\n",
    )
    .expect("test");
    // Git's top level is the repository's root, not the directory pytest runs in.
    let git = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(repo)
        .status()
        .expect("git init");
    assert!(git.success());
    let file = repo.join("results.json");
    let out = agent(&dead_url(), &repo.join("spool"))
        .current_dir(&svc)
        .args(["run", "--no-publish", "--results-json"])
        .arg(&file)
        .arg("--")
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("results")).expect("JSON");
    assert_eq!(
        owners_by_name(&v),
        [
            (
                "test_get".to_string(),
                vec!["@acme/api".to_string(), "@alice".to_string()]
            ),
            ("test_total".to_string(), vec!["@acme/cart".to_string()]),
        ]
    );
    // --codeowners names another file.
    std::fs::write(repo.join("OTHER"), "**/test_total.py @bob\n").expect("other");
    let out = agent(&dead_url(), &repo.join("spool"))
        .current_dir(&svc)
        .args(["run", "--no-publish", "--codeowners"])
        .arg(repo.join("OTHER"))
        .arg("--results-json")
        .arg(&file)
        .arg("--")
        .arg(ptp_test_support::python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .expect("agent runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("results")).expect("JSON");
    assert_eq!(
        owners_by_name(&v),
        [
            ("test_get".to_string(), vec![]),
            ("test_total".to_string(), vec!["@bob".to_string()]),
        ]
    );
}
