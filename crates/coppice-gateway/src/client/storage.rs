//! The typed client's calls for persistent volumes and directory snapshots.

use bytes::Bytes;

use super::{Client, ClientError};

impl Client {
    /// Creates a volume; returns its `{volumeID, name, token}`.
    ///
    /// # Errors
    /// [`ClientError`] (409 for a taken name).
    pub async fn create_volume(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "name": name });
        let (_, bytes) =
            Self::whole(self.send(self.api("POST", "/volumes", Some(body))?).await?).await?;
        Self::json(&bytes)
    }

    /// Every volume, as `{volumeID, name}`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn volumes(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        let (_, bytes) = Self::whole(self.send(self.api("GET", "/volumes", None)?).await?).await?;
        Self::json(&bytes)
    }

    /// Deletes a volume and its files.
    ///
    /// # Errors
    /// [`ClientError`] (409 while a sandbox mounts it).
    pub async fn delete_volume(&self, id: &str) -> Result<(), ClientError> {
        let request = self.api("DELETE", &format!("/volumes/{id}"), None)?;
        Self::whole(self.send(request).await?).await.map(drop)
    }

    /// Captures directory `path` of a sandbox; returns the snapshot's description.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_dir_snapshot(
        &self,
        sandbox: &str,
        path: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "path": path });
        let request = self.api(
            "POST",
            &format!("/sandboxes/{sandbox}/directory-snapshots"),
            Some(body),
        )?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }

    /// Every directory snapshot.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn dir_snapshots(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        let request = self.api("GET", "/directory-snapshots", None)?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }

    /// Writes a directory snapshot into a sandbox, at `path` or where it was taken; returns
    /// how many entries were written.
    ///
    /// # Errors
    /// [`ClientError`] (400 for an archive that would leave the directory).
    pub async fn restore_dir_snapshot(
        &self,
        id: &str,
        sandbox: &str,
        path: Option<&str>,
    ) -> Result<u64, ClientError> {
        let mut body = serde_json::json!({ "sandboxID": sandbox });
        if let Some(path) = path {
            body["path"] = path.into();
        }
        let request = self.api(
            "POST",
            &format!("/directory-snapshots/{id}/restore"),
            Some(body),
        )?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        let value: serde_json::Value = Self::json(&bytes)?;
        Ok(value["entries"].as_u64().unwrap_or_default())
    }

    /// A directory snapshot's tar.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn download_dir_snapshot(&self, id: &str) -> Result<Bytes, ClientError> {
        let request = self.api("GET", &format!("/directory-snapshots/{id}/archive"), None)?;
        Self::whole(self.send(request).await?)
            .await
            .map(|(_, bytes)| bytes)
    }

    /// Deletes a directory snapshot.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn delete_dir_snapshot(&self, id: &str) -> Result<(), ClientError> {
        let request = self.api("DELETE", &format!("/directory-snapshots/{id}"), None)?;
        Self::whole(self.send(request).await?).await.map(drop)
    }
}
