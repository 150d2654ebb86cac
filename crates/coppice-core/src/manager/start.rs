//! A template's service: started in the background in every sandbox booted from the
//! template (created, forked, or resumed by a reboot), and waited for, bounded, before the
//! sandbox is handed out, so that the first request never races it.

use std::time::{Duration, Instant};

use crate::exec::{ExecRequest, ExecUser, ExitStatus};
use crate::id::{SandboxId, TemplateId};
use crate::spec::SandboxSpec;
use crate::storage::TemplateStart;

use super::{Inner, ManagerError};

/// Where a started service's output goes, inside the sandbox.
pub const START_LOG: &str = "/tmp/.coppice-start.log";
/// Longest one ready check may run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause between ready checks, doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

impl Inner {
    /// Starts the service a rebooted sandbox recorded at create; a record from before
    /// services were recorded asks its template as it is now (one that is gone starts
    /// nothing: a sandbox may outlive its template).
    pub(super) fn restart_service_blocking(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
    ) -> Result<(), ManagerError> {
        if spec.service.is_some() {
            return self.start_service_blocking(id, spec);
        }
        match self.backends.storage.template(&spec.template) {
            Ok(info) => {
                let mut asked = spec.clone();
                asked.service = info.start;
                self.start_service_blocking(id, &asked)
            }
            Err(error) => {
                tracing::debug!(sandbox_id = %id, template = %spec.template, error = %error, "no template to start a service from");
                Ok(())
            }
        }
    }

    /// Starts sandbox `id`'s service (if it has one) as its own user, else the sandbox's
    /// default user, and waits until
    /// its ready check passes, for at most the configured time.
    pub(super) fn start_service_blocking(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
    ) -> Result<(), ManagerError> {
        let Some(start) = &spec.service else {
            return Ok(());
        };
        let as_user = |argv: Vec<String>| ExecRequest {
            timeout: Some(CHECK_TIMEOUT),
            user: start
                .user
                .as_deref()
                .or(spec.defaults.user.as_deref())
                .map_or(ExecUser::User, template_user),
            cwd: spec.defaults.workdir.clone(),
            ..ExecRequest::new(argv)
        };
        let launch = as_user(background(&start.command));
        let check = start
            .ready
            .as_ref()
            .map(|ready| as_user(vec!["/bin/sh".into(), "-c".into(), ready.clone()]));
        let template = &spec.template;
        let launched =
            self.backends.runtime.exec(id, &launch).map_err(|source| {
                ManagerError::from_runtime("start the template's service", source)
            })?;
        if launched.status != ExitStatus::Code(0) {
            return Err(self.not_ready(template, start, &describe(&launched)));
        }
        let Some(check) = check else {
            return Ok(());
        };
        let deadline = Instant::now() + self.config.template_ready_timeout;
        let mut pause = FIRST_PAUSE;
        loop {
            let outcome = self.backends.runtime.exec(id, &check).map_err(|source| {
                ManagerError::from_runtime("check the template's service", source)
            })?;
            if outcome.status == ExitStatus::Code(0) {
                return Ok(());
            }
            if Instant::now() + pause >= deadline {
                return Err(self.not_ready(template, start, &describe(&outcome)));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    fn not_ready(
        &self,
        template: &TemplateId,
        start: &TemplateStart,
        detail: &str,
    ) -> ManagerError {
        ManagerError::TemplateNotReady {
            template: template.clone(),
            seconds: self.config.template_ready_timeout.as_secs(),
            detail: format!(
                "`{}` (started with `{}`; its output is in {START_LOG}): {detail}",
                start.ready.as_deref().unwrap_or("-"),
                start.command
            ),
        }
    }
}

/// `command` detached from the exec that starts it: its output to the start log, so the exec
/// returns at once and the service runs on under the sandbox's init.
fn background(command: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("({command}) </dev/null >>{START_LOG} 2>&1 &"),
    ]
}

/// Who runs a template's service: its default user, as the sandbox's own `/etc/passwd`
/// names it (root needs no looking up).
fn template_user(name: &str) -> ExecUser {
    match name {
        "root" => ExecUser::Root,
        other => ExecUser::Named(other.to_owned()),
    }
}

fn describe(outcome: &crate::exec::ExecOutcome) -> String {
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    let said = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let said: String = said.trim().chars().take(400).collect();
    format!(
        "{:?}{}",
        outcome.status,
        if said.is_empty() {
            String::new()
        } else {
            format!(", {said}")
        }
    )
}

/// Gives a new sandbox its template's environment (under its own) and, unless it has them
/// already (a fork's come from its source), its template's default user and directory and
/// its service.
pub(super) fn take_template_defaults(
    spec: &mut crate::spec::SandboxSpec,
    template: &crate::storage::TemplateInfo,
) {
    for (name, value) in &template.env {
        spec.env
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
    if spec.defaults == crate::runtime::ProcessDefaults::default() {
        let given = |value: &str| (!value.is_empty()).then(|| value.to_owned());
        spec.defaults = crate::runtime::ProcessDefaults {
            user: given(&template.default_user),
            workdir: given(&template.default_workdir),
        };
    }
    if spec.service.is_none() {
        spec.service.clone_from(&template.start);
    }
}
