//! The FreeBSD network's seam: the base system's `ifconfig`, `pfctl` and `sysctl`, and the
//! text of `/etc/pf.conf`. The commands are plain processes, so the real implementation is
//! portable; it is only used on FreeBSD.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What the pf network needs of the host.
pub trait PfSys: Send + Sync + std::fmt::Debug + 'static {
    /// Runs `program args…`, feeding `stdin` when given; its standard output.
    ///
    /// # Errors
    /// The program could not start or failed; the error carries its message.
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> io::Result<String>;

    /// The text of the host's `pf.conf`.
    ///
    /// # Errors
    /// It cannot be read.
    fn pf_conf(&self) -> io::Result<String>;
}

/// The host's commands and `pf.conf`.
#[derive(Debug, Clone)]
pub struct CommandPfSys {
    /// Where `pf.conf` is (`/etc/pf.conf`).
    pub pf_conf: PathBuf,
}

impl Default for CommandPfSys {
    fn default() -> Self {
        Self {
            pf_conf: "/etc/pf.conf".into(),
        }
    }
}

impl PfSys for CommandPfSys {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> io::Result<String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(io::Error::other(format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    fn pf_conf(&self) -> io::Result<String> {
        std::fs::read_to_string(&self.pf_conf)
    }
}

#[cfg(test)]
pub(crate) use fake::FakePfSys;

#[cfg(test)]
mod fake {
    //! A recording fake of the FreeBSD host: interfaces (epairs in pairs, bridges), pf
    //! anchors, every command, and failures injected by command prefix.

    use std::collections::BTreeMap;
    use std::io;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    use super::PfSys;

    #[derive(Debug, Default)]
    struct State {
        /// Interface → the pair it belongs to (its own number for a bridge).
        interfaces: BTreeMap<String, u32>,
        /// Addresses added with `alias`, as `<interface> <address>`.
        addresses: std::collections::BTreeSet<String>,
        next_unit: u32,
        anchors: BTreeMap<String, String>,
        /// Addresses in each anchor's pin table; loading the anchor empties it, as pf does.
        pins: BTreeMap<String, Vec<String>>,
        commands: Vec<String>,
        fail_prefixes: Vec<String>,
        pf_conf: String,
    }

    #[derive(Debug, Default)]
    pub(crate) struct FakePfSys(Mutex<State>);

    impl FakePfSys {
        fn state(&self) -> MutexGuard<'_, State> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn with_pf_conf(self, text: &str) -> Self {
            self.state().pf_conf = text.to_owned();
            self
        }

        pub(crate) fn with_interface(self, name: &str) -> Self {
            {
                let mut state = self.state();
                state.next_unit += 1;
                let unit = state.next_unit;
                state.interfaces.insert(name.to_owned(), unit);
            }
            self
        }

        /// The next command starting with `prefix` fails.
        pub(crate) fn fail_next(&self, prefix: &str) {
            self.state().fail_prefixes.push(prefix.to_owned());
        }

        pub(crate) fn commands(&self) -> Vec<String> {
            self.state().commands.clone()
        }

        pub(crate) fn interfaces(&self) -> Vec<String> {
            self.state().interfaces.keys().cloned().collect()
        }

        pub(crate) fn anchors(&self) -> BTreeMap<String, String> {
            self.state().anchors.clone()
        }

        pub(crate) fn pins(&self, anchor: &str) -> Vec<String> {
            self.state().pins.get(anchor).cloned().unwrap_or_default()
        }
    }

    fn missing(name: &str) -> io::Error {
        io::Error::other(format!("ifconfig: interface {name} does not exist"))
    }

    impl PfSys for FakePfSys {
        fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> io::Result<String> {
            let mut state = self.state();
            let command = format!("{program} {}", args.join(" "));
            state.commands.push(command.clone());
            if let Some(at) = state
                .fail_prefixes
                .iter()
                .position(|prefix| command.starts_with(prefix.as_str()))
            {
                state.fail_prefixes.remove(at);
                return Err(io::Error::other(format!("injected failure of {command}")));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match (program, args.as_slice()) {
                ("ifconfig", ["-l"]) => Ok(state
                    .interfaces
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")),
                ("ifconfig", [kind, "create"]) => {
                    state.next_unit += 1;
                    let unit = state.next_unit;
                    if *kind == "epair" {
                        state.interfaces.insert(format!("epair{unit}a"), unit);
                        state.interfaces.insert(format!("epair{unit}b"), unit);
                        Ok(format!("epair{unit}a\n"))
                    } else {
                        state.interfaces.insert(format!("{kind}{unit}"), unit);
                        Ok(format!("{kind}{unit}\n"))
                    }
                }
                ("ifconfig", [name, "name", new]) => {
                    let unit = state
                        .interfaces
                        .remove(*name)
                        .ok_or_else(|| missing(name))?;
                    state.interfaces.insert((*new).to_owned(), unit);
                    Ok(String::new())
                }
                ("ifconfig", [name, "destroy"]) => {
                    let unit = state
                        .interfaces
                        .get(*name)
                        .copied()
                        .ok_or_else(|| missing(name))?;
                    state.interfaces.retain(|_, u| *u != unit);
                    Ok(String::new())
                }
                ("ifconfig", [name, _family, address, .., "alias"]) => {
                    if !state.interfaces.contains_key(*name) {
                        return Err(missing(name));
                    }
                    if state.addresses.insert(format!("{name} {address}")) {
                        Ok(String::new())
                    } else {
                        Err(io::Error::other(
                            "ifconfig: ioctl (SIOCAIFADDR): File exists",
                        ))
                    }
                }
                ("ifconfig", [name, ..]) => {
                    if state.interfaces.contains_key(*name) {
                        Ok(String::new())
                    } else {
                        Err(missing(name))
                    }
                }
                ("pfctl", ["-a", anchor, "-f", "-"]) => {
                    state
                        .anchors
                        .insert((*anchor).to_owned(), stdin.unwrap_or_default().to_owned());
                    state.pins.remove(*anchor);
                    Ok(String::new())
                }
                ("pfctl", ["-a", anchor, "-F", "all"]) => {
                    state.anchors.remove(*anchor);
                    state.pins.remove(*anchor);
                    Ok(String::new())
                }
                ("pfctl", ["-a", anchor, "-t", _table, "-T", "add", addresses @ ..]) => {
                    if !state.anchors.contains_key(*anchor) {
                        return Err(io::Error::other(format!("pfctl: anchor {anchor} is empty")));
                    }
                    let pins = state.pins.entry((*anchor).to_owned()).or_default();
                    pins.extend(addresses.iter().map(|&address| address.to_owned()));
                    Ok(String::new())
                }
                ("pfctl", ["-k", _]) | ("sysctl", _) => Ok(String::new()),
                _ => Err(io::Error::other(format!(
                    "the fake does not know {command}"
                ))),
            }
        }

        fn pf_conf(&self) -> io::Result<String> {
            Ok(self.state().pf_conf.clone())
        }
    }
}
