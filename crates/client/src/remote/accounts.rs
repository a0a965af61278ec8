//! Accounts, for administrators (`/api/v1/admin/users`).

use reqwest::Method;
use tessera_proto::api::{Account, AccountList, NewAccount, NewPassword, PasswordChanged};

use super::{ClientError, Remote};

fn user_path(name: &str, rest: &str) -> String {
    let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("/admin/users/{name}{rest}")
}

impl Remote {
    pub async fn users(&self) -> Result<AccountList, ClientError> {
        Self::json(self.request(Method::GET, "/admin/users")).await
    }

    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<Account, ClientError> {
        let req = NewAccount {
            name: name.to_owned(),
            password: password.to_owned(),
            admin,
        };
        self.post("/admin/users", &req).await
    }

    /// Disables the account and signs out its devices.
    pub async fn disable_user(&self, name: &str) -> Result<PasswordChanged, ClientError> {
        Self::json(self.request(Method::POST, &user_path(name, "/disable"))).await
    }

    pub async fn enable_user(&self, name: &str) -> Result<Account, ClientError> {
        Self::json(self.request(Method::POST, &user_path(name, "/enable"))).await
    }

    /// Deletes the account: restorable until its purge, or purged now
    /// (`None` then).
    pub async fn delete_user(&self, name: &str, now: bool) -> Result<Option<Account>, ClientError> {
        let mut req = self.request(Method::DELETE, &user_path(name, ""));
        if now {
            req = req.query(&[("now", "true")]);
        }
        let resp = Self::send(req).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(resp.json().await?))
    }

    pub async fn restore_user(&self, name: &str) -> Result<Account, ClientError> {
        Self::json(self.request(Method::POST, &user_path(name, "/restore"))).await
    }

    /// Sets the account's password; its devices are signed out.
    pub async fn reset_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<PasswordChanged, ClientError> {
        let req = NewPassword {
            password: password.to_owned(),
        };
        Self::json(
            self.request(Method::PUT, &user_path(name, "/password"))
                .json(&req),
        )
        .await
    }
}
