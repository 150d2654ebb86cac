//! The devfs ruleset of a sandbox's `/dev`: everything hidden, then only the nodes a program
//! needs unhidden (null, zero, random, urandom, the standard streams, its terminals). No
//! disks, no `bpf`, no `mem`, no `pf`, no `fdescfs` (FreeBSD-SA-26:66.jail).

use std::fmt::Write as _;

/// The ruleset number coppice uses unless configured otherwise (free in a stock
/// `/etc/defaults/devfs.rules`, which uses 1 to 4).
pub const DEFAULT_RULESET: u16 = 4215;

/// The nodes a sandbox sees, as devfs path patterns.
/// A directory is listed with its entries: hiding it would white out every path below it.
pub const VISIBLE: [&str; 13] = [
    "null", "zero", "random", "urandom", "crypto", "stdin", "stdout", "stderr", "fd", "fd/*",
    "ptmx", "pts", "pts/*",
];

/// The ruleset as `/etc/devfs.rules` holds it: a `[name=number]` section.
pub fn devfs_rules(name: &str, number: u16) -> String {
    let mut text = format!("[{name}={number}]\nadd hide\n");
    for path in VISIBLE {
        let _ = writeln!(text, "add path '{path}' unhide");
    }
    text
}

/// The same rules as `devfs rule` argument lists, to apply the ruleset without editing
/// `/etc/devfs.rules`: first emptied, then filled.
pub fn devfs_commands(number: u16) -> Vec<Vec<String>> {
    let set = number.to_string();
    let base = |args: &[&str]| {
        let mut command: Vec<String> = ["devfs", "rule", "-s", &set]
            .iter()
            .map(|&arg| arg.to_owned())
            .collect();
        command.extend(args.iter().map(|&arg| arg.to_owned()));
        command
    };
    let mut commands = vec![base(&["delset"]), base(&["add", "hide"])];
    for path in VISIBLE {
        commands.push(base(&["add", "path", path, "unhide"]));
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ruleset_hides_everything_but_the_basics() {
        let text = devfs_rules("coppice", 4215);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            ["[coppice=4215]", "add hide", "add path 'null' unhide"]
        );
        assert_eq!(lines.len(), 2 + VISIBLE.len());
        for hidden in ["bpf", "mem", "kmem", "pf", "ada0", "md0"] {
            assert!(!VISIBLE.contains(&hidden), "{hidden}");
        }
        // A hidden directory would white out what is below it.
        for path in VISIBLE {
            if let Some((parent, _)) = path.rsplit_once('/') {
                assert!(VISIBLE.contains(&parent), "{path} needs {parent}");
            }
        }
        // /dev/stdin and friends point into fd/.
        assert!(VISIBLE.contains(&"fd/*"));
        let commands: Vec<String> = devfs_commands(4215).iter().map(|c| c.join(" ")).collect();
        assert_eq!(commands[0], "devfs rule -s 4215 delset");
        assert_eq!(commands[1], "devfs rule -s 4215 add hide");
        assert_eq!(
            commands.last().unwrap(),
            "devfs rule -s 4215 add path pts/* unhide"
        );
    }
}
