//! Where a signed-in user's path leads. A user's files are their root
//! namespace plus the shared folders mounted in it: a path at or below a
//! mount point leads into that folder's namespace, every other path into
//! the user's own. Handlers take a [`Place`] from here before
//! they touch the tree, so a viewer's write is refused in one spot and no
//! handler reads a namespace the user has no mount of.

use tessera_proto::RemotePath;
use tessera_proto::api::ShareRole;

use super::{ApiError, AppState, AuthUser};
use crate::meta::MountRow;

/// A path as the tree sees it.
#[derive(Debug, Clone)]
pub struct Place {
    /// The namespace it lies in.
    pub ns: i64,
    /// The path inside that namespace (`/` for a mount point itself).
    pub path: RemotePath,
    /// The path as the user named it.
    pub shown: RemotePath,
    /// The shared folder it lies in, if any.
    pub mount: Option<MountRow>,
}

impl Place {
    /// True for a shared folder's mount point itself.
    pub fn is_mount(&self) -> bool {
        self.mount.is_some() && self.path.is_root()
    }

    /// The caller's role in the shared folder it lies in.
    pub fn role(&self) -> Option<ShareRole> {
        self.mount.as_ref().map(|m| ShareRole::from_stored(&m.role))
    }

    /// The path inside the namespace, for an operation on a file: a mount
    /// point is a folder.
    pub fn file(&self) -> Result<&RemotePath, ApiError> {
        if self.is_mount() {
            return Err(ApiError::NotAFile(self.shown.to_string()));
        }
        Ok(&self.path)
    }
}

/// The user's mounts, looked up once for a request (a batch places many
/// paths with one query).
pub struct Places {
    own: i64,
    mounts: Vec<MountRow>,
}

impl Places {
    pub async fn of(state: &AppState, user: &AuthUser) -> Result<Self, ApiError> {
        Ok(Self {
            own: user.ns,
            mounts: state.meta.mounts_of(user.user_id).await?,
        })
    }

    pub fn mounts(&self) -> &[MountRow] {
        &self.mounts
    }

    /// Where `path` leads, for reading.
    pub fn read(&self, path: &RemotePath) -> Result<Place, ApiError> {
        // Mounts never hold one another, so at most one holds the path.
        let Some(mount) = self.mounts.iter().find(|m| m.holds(path)) else {
            return Ok(Place {
                ns: self.own,
                path: path.clone(),
                shown: path.clone(),
                mount: None,
            });
        };
        let depth = mount.point().segments().count();
        let mut inner = RemotePath::root();
        for seg in path.segments().skip(depth) {
            inner = inner.join(seg)?;
        }
        Ok(Place {
            ns: mount.namespace_id,
            path: inner,
            shown: path.clone(),
            mount: Some(mount.clone()),
        })
    }

    /// The mounts whose mount points are right inside the user's own
    /// folder `path`.
    pub fn mounts_in<'a>(&'a self, path: &'a RemotePath) -> impl Iterator<Item = &'a MountRow> {
        self.mounts
            .iter()
            .filter(move |m| m.point().parent().as_ref() == Some(path))
    }

    /// Where `path` leads, for a change: refused in a folder shared with
    /// the user as a viewer.
    pub fn write(&self, path: &RemotePath) -> Result<Place, ApiError> {
        let place = self.read(path)?;
        if let Some(m) = &place.mount
            && !m.writable()
        {
            return Err(read_only(&m.name));
        }
        Ok(place)
    }
}

pub fn read_only(name: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "/{name} is shared with you as a viewer, so it is read-only: keep your copy \
         elsewhere, or ask its owner to make you an editor"
    ))
}

/// Where `path` leads for `user`, for reading.
pub async fn read(state: &AppState, user: &AuthUser, path: &RemotePath) -> Result<Place, ApiError> {
    Places::of(state, user).await?.read(path)
}

/// Where `path` leads for `user`, for a change.
pub async fn write(
    state: &AppState,
    user: &AuthUser,
    path: &RemotePath,
) -> Result<Place, ApiError> {
    Places::of(state, user).await?.write(path)
}
