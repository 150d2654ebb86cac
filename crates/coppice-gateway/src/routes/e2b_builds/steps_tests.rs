//! E2B steps as recipes: what maps, in order and with its context, and what is refused.

use super::*;

fn start(steps: &serde_json::Value) -> BuildStart {
    serde_json::from_value(serde_json::json!({
        "fromImage": "debian:bookworm",
        "steps": steps,
        "startCmd": "serve",
        "readyCmd": "test -f /tmp/ready",
    }))
    .unwrap()
}

fn id() -> TemplateId {
    "mine".parse().unwrap()
}

fn no_uploads(_: &str) -> Option<bytes::Bytes> {
    None
}

#[test]
fn test_steps_carry_the_user_directory_and_variables_set_before_them() {
    let translated = translate(
        id(),
        start(&serde_json::json!([
            {"type": "ENV", "args": ["A", "1", "B", "2"]},
            {"type": "RUN", "args": ["apt-get install -y jq", "root"]},
            {"type": "WORKDIR", "args": ["/srv/app"]},
            {"type": "RUN", "args": ["make"]},
            {"type": "USER", "args": ["root"]},
            {"type": "WORKDIR", "args": ["sub"]},
            {"type": "COPY", "args": ["app", "dest/", "", "0755"], "filesHash": "h1"},
        ])),
        |hash| (hash == "h1").then(|| bytes::Bytes::from_static(&[0x1f, 0x8b, 8])),
    )
    .unwrap();

    let recipe = &translated.recipe;
    assert_eq!(recipe.debian.release, "bookworm");
    assert!(recipe.debian.packages.contains(&"iproute2".to_owned()));
    assert_eq!(translated.e2b_step_of_run, [2, 3, 4, 6, 7]);
    let run = &recipe.run;
    assert_eq!(run[0].user, None, "RUN as root");
    assert_eq!(run[0].workdir.as_deref(), Some("/home/user"));
    assert_eq!(run[0].env.get("B").map(String::as_str), Some("2"));
    assert_eq!(
        run[1].args,
        ["/srv/app", "user"],
        "WORKDIR made for the user"
    );
    assert_eq!(
        run[2].user.as_deref(),
        Some("user"),
        "RUN as the current user"
    );
    assert_eq!(run[2].workdir.as_deref(), Some("/srv/app"));
    assert_eq!(run[3].args, ["/srv/app/sub", "root"], "a relative WORKDIR");
    assert_eq!(run[4].args, ["app", "dest/", "root", "0755", "z"]);
    assert_eq!(*run[4].stdin, [0x1f, 0x8b, 8]);
    assert_eq!(run[4].workdir.as_deref(), Some("/srv/app/sub"));
    assert_eq!(recipe.user.as_deref(), Some("root"));
    assert_eq!(recipe.workdir.as_deref(), Some("/srv/app/sub"));
    assert!(recipe.env.is_empty(), "ENV holds during the build only");
    let service = recipe.start.as_ref().unwrap();
    assert_eq!(
        (service.command.as_str(), service.ready.as_deref()),
        ("serve", Some("test -f /tmp/ready"))
    );
}

#[test]
fn test_a_forced_step_changes_its_key_and_every_later_one() {
    let steps = serde_json::json!([
        {"type": "RUN", "args": ["one"]},
        {"type": "RUN", "args": ["two"], "force": true},
        {"type": "RUN", "args": ["three"]},
    ]);
    let keys = || {
        translate(id(), start(&steps), no_uploads)
            .unwrap()
            .recipe
            .steps()
            .into_iter()
            .map(|step| step.key)
            .collect::<Vec<_>>()
    };
    let (first, second) = (keys(), keys());
    assert_eq!(first[..2], second[..2], "the base and the step before stay");
    assert_ne!(first[2], second[2]);
    assert_ne!(first[3], second[3]);
}

#[test]
fn test_bases_and_steps_that_do_not_map_are_refused_saying_why() {
    let refused = |body: serde_json::Value| {
        let start: BuildStart = serde_json::from_value(body).unwrap();
        translate(id(), start, no_uploads).unwrap_err()
    };
    assert!(
        refused(serde_json::json!({"fromImage": "ubuntu:22.04"}))
            .contains("coppice template import")
    );
    assert!(refused(serde_json::json!({"fromTemplate": "base"})).contains("from_template"));
    assert!(refused(serde_json::json!({})).contains("no base"));
    let with = |step: serde_json::Value| {
        refused(serde_json::json!({"fromImage": "debian:12", "steps": [step]}))
    };
    assert!(
        with(serde_json::json!({"type": "COPY", "args": ["a", "/b"], "filesHash": "h"}))
            .contains("not uploaded")
    );
    assert!(with(serde_json::json!({"type": "ENV", "args": ["A"]})).contains("pairs"));
    assert!(with(serde_json::json!({"type": "HEALTHCHECK", "args": []})).contains("not supported"));
    assert!(with(serde_json::json!({"type": "USER", "args": ["Bad User"]})).contains("user"));
    let start: BuildStart = serde_json::from_value(serde_json::json!({
        "fromImage": "debian:12",
        "steps": [{"type": "COPY", "args": ["a", "/b", "", "rwx"], "filesHash": "h"}],
    }))
    .unwrap();
    let uploaded = |_: &str| Some(bytes::Bytes::from_static(b"tar"));
    assert!(
        translate(id(), start, uploaded)
            .unwrap_err()
            .contains("octal")
    );
}

#[test]
fn test_debian_images_name_their_release() {
    let release = |image: &str| {
        let start: BuildStart =
            serde_json::from_value(serde_json::json!({ "fromImage": image })).unwrap();
        base(&start).unwrap().release
    };
    assert_eq!(release("debian:bookworm-slim"), "bookworm");
    assert_eq!(release("docker.io/library/debian:13"), "trixie");
    assert_eq!(release("debian"), "stable");
    assert_eq!(release("debian:latest"), "stable");
    let start: BuildStart =
        serde_json::from_value(serde_json::json!({ "fromImage": "e2bdev/base" })).unwrap();
    let default = base(&start).unwrap();
    assert_eq!(default.release, "bookworm");
    assert!(default.packages.contains(&"python3-pip".to_owned()));
}
