//! Build records: the log of the build that made each template (and each tag of it), kept
//! with the template's other metadata and gone with it; and when each step of the build
//! cache was last used, so unused steps can be pruned.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::clock::to_unix_millis;
use crate::id::TemplateId;

/// Most log lines kept per template: the last ones, where a build's outcome is.
pub const MAX_KEPT_LOG_LINES: usize = 5000;

impl Store {
    /// Keeps `lines` (their last [`MAX_KEPT_LOG_LINES`]) as template `id`'s build log,
    /// replacing an earlier one.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn put_build_log(
        &self,
        id: &TemplateId,
        lines: &[String],
        at: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        let kept = &lines[lines.len().saturating_sub(MAX_KEPT_LOG_LINES)..];
        self.connection()
            .execute(
                "INSERT INTO build_logs (template, written_at_ms, log) VALUES (?1, ?2, ?3)
                 ON CONFLICT (template) DO UPDATE SET written_at_ms = ?2, log = ?3",
                params![id.as_str(), to_unix_millis(at), kept.join("\n")],
            )
            .map_err(|source| StoreError::Query {
                op: "put build log",
                source,
            })?;
        Ok(())
    }

    /// Template `id`'s build log, if a build made it.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn build_log(&self, id: &TemplateId) -> Result<Option<Vec<String>>, StoreError> {
        let log: Option<String> = self
            .connection()
            .query_row(
                "SELECT log FROM build_logs WHERE template = ?1",
                [id.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Query {
                op: "get build log",
                source,
            })?;
        Ok(log.map(|log| log.lines().map(str::to_owned).collect()))
    }

    /// Forgets template `id`'s build log; forgetting an absent one succeeds.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn delete_build_log(&self, id: &TemplateId) -> Result<(), StoreError> {
        self.connection()
            .execute("DELETE FROM build_logs WHERE template = ?1", [id.as_str()])
            .map_err(|source| StoreError::Query {
                op: "delete build log",
                source,
            })?;
        Ok(())
    }
}

impl Store {
    /// Records that build cache step `id` was used (made or reused) at `at`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn touch_build_step(
        &self,
        id: &TemplateId,
        at: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        self.connection()
            .execute(
                "INSERT INTO build_steps (template, used_at_ms) VALUES (?1, ?2)
                 ON CONFLICT (template) DO UPDATE SET used_at_ms = ?2",
                params![id.as_str(), to_unix_millis(at)],
            )
            .map_err(|source| StoreError::Query {
                op: "touch build step",
                source,
            })?;
        Ok(())
    }

    /// When build cache step `id` was last used, if that was recorded.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn build_step_used(
        &self,
        id: &TemplateId,
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
        let at: Option<i64> = self
            .connection()
            .query_row(
                "SELECT used_at_ms FROM build_steps WHERE template = ?1",
                [id.as_str()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Query {
                op: "get build step",
                source,
            })?;
        Ok(at.map(crate::clock::from_unix_millis))
    }

    /// Forgets build cache step `id`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn forget_build_step(&self, id: &TemplateId) -> Result<(), StoreError> {
        self.connection()
            .execute("DELETE FROM build_steps WHERE template = ?1", [id.as_str()])
            .map_err(|source| StoreError::Query {
                op: "forget build step",
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn test_a_build_log_is_kept_replaced_bounded_and_deleted() {
        let store = Store::in_memory().unwrap();
        let id: TemplateId = "mine".parse().unwrap();
        let at = std::time::SystemTime::now();
        assert_eq!(store.build_log(&id).unwrap(), None);
        store
            .put_build_log(&id, &["one".into(), "two".into()], at)
            .unwrap();
        assert_eq!(store.build_log(&id).unwrap().unwrap(), ["one", "two"]);
        let long: Vec<String> = (0..MAX_KEPT_LOG_LINES + 10)
            .map(|n| n.to_string())
            .collect();
        store.put_build_log(&id, &long, at).unwrap();
        let kept = store.build_log(&id).unwrap().unwrap();
        assert_eq!(kept.len(), MAX_KEPT_LOG_LINES);
        assert_eq!(kept[0], "10", "the last lines are kept");
        store.delete_build_log(&id).unwrap();
        assert_eq!(store.build_log(&id).unwrap(), None);
        store.delete_build_log(&id).unwrap();
    }

    #[test]
    fn test_a_build_steps_last_use_is_kept_until_forgotten() {
        let store = Store::in_memory().unwrap();
        let id: TemplateId = "build-0123".parse().unwrap();
        assert_eq!(store.build_step_used(&id).unwrap(), None);
        let first = std::time::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let later = first + std::time::Duration::from_secs(60);
        store.touch_build_step(&id, first).unwrap();
        store.touch_build_step(&id, later).unwrap();
        assert_eq!(store.build_step_used(&id).unwrap(), Some(later));
        store.forget_build_step(&id).unwrap();
        assert_eq!(store.build_step_used(&id).unwrap(), None);
    }
}
