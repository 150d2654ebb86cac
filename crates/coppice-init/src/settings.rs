//! What the daemon tells a runtime about envd, and the arguments every runtime starts it with.

use std::path::PathBuf;

/// How every sandbox gets its envd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvdSettings {
    /// The `coppice-envd` executable on the host (or a binary with an envd mode).
    pub binary: PathBuf,
    /// Arguments before envd's own (e.g. the envd mode's sub-command).
    pub leading_args: Vec<String>,
    /// The TCP port it serves inside the sandbox's network (0: none).
    pub port: u16,
    /// The user of requests that name none.
    pub default_user: String,
}

impl EnvdSettings {
    /// envd at `binary`, on E2B's port 49983, defaulting to the `user` account.
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            leading_args: Vec::new(),
            port: 49983,
            default_user: "user".into(),
        }
    }

    /// envd's arguments (after its program name) in sandbox `sandbox_id`, keeping `/init`'s
    /// settings in `state_file` inside the sandbox; it listens on its standard input.
    pub fn args(&self, sandbox_id: &str, state_file: &str) -> Vec<String> {
        let own = [
            "--listen-stdin",
            "--port",
            &self.port.to_string(),
            "--default-user",
            &self.default_user,
            "--sandbox-id",
            sandbox_id,
            "--state-file",
            state_file,
        ]
        .map(str::to_owned);
        self.leading_args.iter().cloned().chain(own).collect()
    }

    /// [`Self::args`] for a sandbox whose template names its own default user and working
    /// directory (`None` keeps this envd's).
    pub fn args_for(
        &self,
        sandbox_id: &str,
        state_file: &str,
        user: Option<&str>,
        workdir: Option<&str>,
    ) -> Vec<String> {
        let mut settings = self.clone();
        if let Some(user) = user {
            user.clone_into(&mut settings.default_user);
        }
        let mut args = settings.args(sandbox_id, state_file);
        if let Some(workdir) = workdir {
            args.extend(["--default-workdir".to_owned(), workdir.to_owned()]);
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_template_names_its_own_user_and_directory() {
        let settings = EnvdSettings::new("/usr/bin/coppice-envd".into());
        let args = settings
            .args_for("a1", "/run/s.json", Some("app"), Some("/srv"))
            .join(" ");
        assert!(args.contains("--default-user app "), "{args}");
        assert!(args.ends_with(" --default-workdir /srv"), "{args}");
        assert_eq!(
            settings.args_for("a1", "/run/s.json", None, None),
            settings.args("a1", "/run/s.json")
        );
    }

    #[test]
    fn test_args_follow_the_leading_ones() {
        let mut settings = EnvdSettings::new("/usr/bin/coppiced".into());
        settings.leading_args = vec!["__envd".into()];
        assert_eq!(
            settings.args("a1", "/run/s.json").join(" "),
            "__envd --listen-stdin --port 49983 --default-user user --sandbox-id a1 \
             --state-file /run/s.json"
        );
    }
}
