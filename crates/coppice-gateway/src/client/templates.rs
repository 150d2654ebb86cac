//! The typed client's calls for templates: list, details, import from an OCI image, delete.

use super::{Client, ClientError};

impl Client {
    /// Every template, as the gateway describes them (`templateID`, `sizeBytes`, …).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn templates(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        let (_, bytes) =
            Self::whole(self.send(self.api("GET", "/templates", None)?).await?).await?;
        Self::json(&bytes)
    }

    /// One template.
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown one).
    pub async fn template(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        let request = self.api("GET", &format!("/templates/{id}"), None)?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }

    /// Makes template `id` from the OCI image at `image` on the gateway's host.
    ///
    /// # Errors
    /// [`ClientError`] (400 for a missing or refused image, 409 for a taken name).
    pub async fn import_template(
        &self,
        id: &str,
        image: &std::path::Path,
    ) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "templateID": id, "image": image });
        let request = self.api("POST", "/templates/imports", Some(body))?;
        let (_, bytes) = Self::whole(self.send(request).await?).await?;
        Self::json(&bytes)
    }

    /// Deletes a template (a snapshot, an imported one, …; not a built-in one).
    ///
    /// # Errors
    /// [`ClientError`] (404 for an unknown one).
    pub async fn delete_template(&self, id: &str) -> Result<(), ClientError> {
        let request = self.api("DELETE", &format!("/templates/{id}"), None)?;
        Self::whole(self.send(request).await?).await.map(drop)
    }
}
