//! `tessera admin workers` and `tessera admin quota`: the server's
//! background workers and users' quotas, over HTTP with the saved login
//! (an administrator's).

use clap::Subcommand;
use tessera_client::Remote;
use tessera_client::remote::{Usage, WorkerState, WorkerStatus};

use crate::profile;

#[derive(Subcommand)]
pub enum WorkersCommand {
    /// Run one step of a worker now and show its status after it.
    Run {
        /// The worker, as `tessera admin workers` names it.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Set USER's quota: a size such as 50GiB or 500MB, or 0 for no limit.
    Set {
        /// The user's name.
        user: String,
        /// The quota: 50GiB, 500MB, or 0 for none.
        size: bytesize::ByteSize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show USER's usage and quota.
    Show {
        /// The user's name.
        user: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn quota(command: QuotaCommand) -> anyhow::Result<()> {
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token))?;
    let (usage, json) = match command {
        QuotaCommand::Set { user, size, json } => {
            let bytes = size.as_u64();
            (
                remote
                    .set_quota(&user, (bytes > 0).then_some(bytes))
                    .await?,
                json,
            )
        }
        QuotaCommand::Show { user, json } => (remote.quota(&user).await?, json),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
    } else {
        println!("{}", usage_line(&usage));
    }
    Ok(())
}

/// `alice: 1.2 GiB of 50.0 GiB used (2%)`, or `… used, no quota`.
pub fn usage_line(u: &Usage) -> String {
    let used = bytesize::ByteSize::b(u.used_bytes).display().iec();
    match u.quota_bytes {
        Some(q) => format!(
            "{}: {used} of {} used ({}%)",
            u.user,
            bytesize::ByteSize::b(q).display().iec(),
            u.used_bytes.saturating_mul(100) / q.max(1)
        ),
        None => format!("{}: {used} used, no quota", u.user),
    }
}

pub async fn workers(command: Option<WorkersCommand>, json: bool) -> anyhow::Result<()> {
    let p = profile::load()?;
    let remote = Remote::new(&p.server, Some(p.token))?;
    match command {
        None => {
            let list = remote.workers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", table(&list, tessera_server::meta::now_ms()));
            }
        }
        Some(WorkersCommand::Run { name }) => {
            let status = remote.run_worker(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!(
                    "{}",
                    table(
                        std::slice::from_ref(&status),
                        tessera_server::meta::now_ms()
                    )
                );
            }
        }
    }
    Ok(())
}

/// One line per worker under a header: name, state, last run, next run,
/// items the last run handled, last error.
fn table(list: &[WorkerStatus], now_ms: i64) -> String {
    let mut out = format!(
        "{:<12} {:<7} {:>12} {:>12} {:>6}  {}\n",
        "NAME", "STATE", "LAST RUN", "NEXT RUN", "DONE", "LAST ERROR"
    );
    for w in list {
        let state = match w.state {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Failed => "failed",
            WorkerState::Standby => "standby",
        };
        let note = match (&w.state, &w.holder, &w.last_error) {
            (WorkerState::Standby, Some(holder), _) => format!("runs on {holder}"),
            (_, _, Some(error)) => error.clone(),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<12} {:<7} {:>12} {:>12} {:>6}  {}\n",
            w.name,
            state,
            w.last_run_ms
                .map_or_else(|| "never".to_owned(), |t| ago(now_ms - t)),
            w.next_run_ms
                .map_or_else(|| "now".to_owned(), |t| ahead(t - now_ms)),
            w.last_done,
            note,
        ));
    }
    out
}

/// `12 s`, `5 min`, `3 h`, `2 d`.
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

fn ago(ms: i64) -> String {
    format!("{} ago", span(ms))
}

fn ahead(ms: i64) -> String {
    format!("in {}", span(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_when_in_words() {
        let now = 1_000_000_000;
        let trash = WorkerStatus {
            name: "trash".into(),
            state: WorkerState::Failed,
            runs: 4,
            last_run_ms: Some(now - 90_000),
            last_done: 0,
            last_error: Some("database: gone".into()),
            failures: 1,
            next_run_ms: Some(now + 2_000),
            holder: None,
        };
        let fresh = WorkerStatus {
            state: WorkerState::Busy,
            ..WorkerStatus::new("pending")
        };
        let t = table(&[trash, fresh], now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NAME"), "{t}");
        assert!(lines[1].starts_with("trash"), "{t}");
        assert!(
            lines[1].contains("failed") && lines[1].contains("1 min ago"),
            "{t}"
        );
        assert!(
            lines[1].contains("in 2 s") && lines[1].ends_with("database: gone"),
            "{t}"
        );
        assert!(
            lines[2].contains("never") && lines[2].contains("now"),
            "{t}"
        );
    }
}
