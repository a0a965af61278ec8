//! Shared folders: a child of `queries.rs`, compiled per backend with it.
//!
//! Sharing a folder moves it out of its owner's root namespace into a
//! namespace of its own (node ids, revisions, pending lists and links go
//! with it; the folder's node becomes that namespace's root), and mounts
//! it at the top of each member's files, the owner's included. Each step
//! is one transaction over every journal it touches:
//!
//! - the shared namespace's journal starts with an entry for every live
//!   folder and file in it, so reading it from its start describes the
//!   folder whole (that is how a member's devices first fetch it);
//! - each member's root journal gets a `mkdir` at the mount when it is
//!   made (its sequence number is kept as `mount_seq`), a `mkdir` again
//!   when their role changes (it wakes their devices), a `move` when they
//!   rename it and a `delete` when they leave or are removed, so an
//!   offline device learns all of it from its cursor.
//!
//! A mount is made at the top of a member's files (at the folder's place
//! for its owner); the member may move it among their own folders, never
//! into another shared folder. A path at or below a mount point leads
//! into the mount (`api/place.rs`); a move of one of the member's own
//! folders carries the mounts inside it along, and a delete lifts them to
//! the top first, so a shared folder never ends up in anyone's trash by
//! way of a folder around it.

use std::collections::{HashSet, VecDeque};

use super::*;
use crate::meta::{MemberRow, MountRow};
use tessera_proto::path::numbered_name;

macro_rules! mount_cols {
    () => {
        "m.user_id, m.namespace_id, m.name, m.role, m.mount_seq, n.root_node_id AS root_id,
         n.owner_user_id AS owner_id"
    };
}

/// Tables whose rows belong to one node of a namespace, by `node_id`.
const NODE_TABLES: [&str; 4] = ["revisions", "revision_blocks", "pending_lists", "links"];

/// The subtree of node `$2` in namespace `$1`, trashed nodes included.
/// `UNION` (not `UNION ALL`) ends the walk in a damaged tree with a cycle.
/// `CROSS JOIN` keeps SQLite's step going from the folder reached to its
/// children by index: left free, it scanned the whole namespace for each
/// folder and file reached (sharing 20,000 files took 66 s, not 1).
const SUBTREE: &str = "WITH RECURSIVE sub(id) AS (
    SELECT id FROM nodes WHERE namespace_id = $1 AND id = $2
    UNION SELECT n.id FROM sub s CROSS JOIN nodes n
          WHERE n.namespace_id = $1 AND n.parent_id = s.id)";

impl Store {
    /// The user's mounts by name.
    pub async fn mounts_of(&self, user_id: i64) -> Result<Vec<MountRow>> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            mount_cols!(),
            " FROM mounts m JOIN namespaces n ON n.id = m.namespace_id
              WHERE m.user_id = $1 ORDER BY m.name"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Who has the shared folder `ns`: the owner first, then by name.
    pub async fn members(&self, ns: i64) -> Result<Vec<MemberRow>> {
        Ok(sqlx::query_as(
            "SELECT m.user_id, u.username, m.role FROM mounts m JOIN users u ON u.id = m.user_id
             WHERE m.namespace_id = $1
             ORDER BY CASE m.role WHEN 'owner' THEN 0 ELSE 1 END, u.username",
        )
        .bind(ns)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Shares the folder at `path` in `owner`'s own files (or their
    /// shared folder mounted there) with `member`, as `role`: makes it a
    /// shared folder first if it is not one yet, and changes the role if
    /// the member has it already. Returns the member's mount.
    pub async fn share_folder(
        &self,
        owner: &UserRow,
        path: &RemotePath,
        member: &UserRow,
        role: &str,
        device: &str,
    ) -> Result<MountRow> {
        let Some(name) = path.name() else {
            return Err(MetaError::Invalid(
                "the top of your files cannot be shared: share a folder in it".into(),
            ));
        };
        let (mut w, known) = begin_sharing(self, owner, path, member, device).await?;
        let ns = match known {
            Some(m) if !m.owned() => {
                return Err(MetaError::Forbidden(format!(
                    "{path} is shared with you: only its owner can share it with others"
                )));
            }
            // Commits there hold its lock, held here too: adding a member
            // waits for them, so no block stored meanwhile misses the grant.
            Some(m) => m.namespace_id,
            None => make_shared(&mut w, owner, path).await?,
        };
        if member.id == owner.id {
            return Err(MetaError::Invalid(format!("you own {path} already")));
        }
        let mount = match mount_of(&mut w.tx, member.id, ns).await? {
            Some(m) if m.owned() => {
                return Err(MetaError::Invalid(format!(
                    "{} owns {path}: their role cannot change",
                    member.username
                )));
            }
            Some(m) => {
                change_role(&mut w, &m, role).await?;
                MountRow {
                    role: role.to_owned(),
                    ..m
                }
            }
            None => add_member(&mut w, ns, member, role, name).await?,
        };
        w.commit().await?;
        Ok(mount)
    }

    /// Gives `member` another role in `owner`'s shared folder `ns`.
    pub async fn set_role(
        &self,
        owner: i64,
        ns: i64,
        member: i64,
        role: &str,
        device: &str,
    ) -> Result<()> {
        let mut w = begin_circle(self, ns, ns, &[], device).await?;
        must_own(&mut w.tx, owner, ns).await?;
        let mount = mount_of(&mut w.tx, member, ns)
            .await?
            .ok_or_else(|| MetaError::NotFound("no such member of this shared folder".into()))?;
        if mount.owned() {
            return Err(MetaError::Invalid("the owner's role cannot change".into()));
        }
        change_role(&mut w, &mount, role).await?;
        w.commit().await?;
        Ok(())
    }

    /// Takes the shared folder `ns` away from `member`: the owner removing
    /// a member, or a member leaving (`actor == member`). The owner cannot
    /// leave their own folder; they unshare it.
    pub async fn unmount(&self, actor: i64, ns: i64, member: i64, device: &str) -> Result<()> {
        let mut w = begin_circle(self, ns, ns, &[], device).await?;
        let Some(mount) = mount_of(&mut w.tx, member, ns).await? else {
            return Err(MetaError::NotFound(
                "no such member of this shared folder".into(),
            ));
        };
        if actor == member {
            if mount.owned() {
                return Err(MetaError::Invalid(format!(
                    "you own /{}: unshare it to take it from everyone else; it stays yours",
                    mount.name
                )));
            }
        } else {
            must_own(&mut w.tx, actor, ns).await?;
            if mount.owned() {
                return Err(MetaError::Invalid("the owner cannot be removed".into()));
            }
        }
        drop_mount(&mut w, &mount).await?;
        w.commit().await?;
        Ok(())
    }

    /// Takes the shared folder `ns` from every member but its owner, who
    /// keeps it as it is. Returns how many members lost it.
    pub async fn unshare(&self, owner: i64, ns: i64, device: &str) -> Result<u64> {
        let mut w = begin_circle(self, ns, ns, &[], device).await?;
        must_own(&mut w.tx, owner, ns).await?;
        let mounts: Vec<MountRow> = sqlx::query_as(concat!(
            "SELECT ",
            mount_cols!(),
            " FROM mounts m JOIN namespaces n ON n.id = m.namespace_id
              WHERE m.namespace_id = $1 AND m.role <> 'owner' ORDER BY m.user_id"
        ))
        .bind(ns)
        .fetch_all(&mut *w.tx)
        .await?;
        for m in &mounts {
            drop_mount(&mut w, m).await?;
        }
        w.commit().await?;
        Ok(mounts.len() as u64)
    }

    /// The owner deleting their shared folder: every member loses it, and
    /// the folder goes back into the owner's own files, straight into
    /// their trash (restorable from there as any folder).
    pub async fn delete_shared(&self, owner: &UserRow, ns: i64, device: &str) -> Result<()> {
        // The folder's lock is held to the end: no commit in it runs while
        // its rows move (one that did could be left behind, out of reach).
        let mut w = begin_circle(self, owner.root_ns, ns, &[], device).await?;
        must_own(&mut w.tx, owner.id, ns).await?;
        let mounts: Vec<MountRow> = sqlx::query_as(concat!(
            "SELECT ",
            mount_cols!(),
            " FROM mounts m JOIN namespaces n ON n.id = m.namespace_id
              WHERE m.namespace_id = $1 ORDER BY m.user_id"
        ))
        .bind(ns)
        .fetch_all(&mut *w.tx)
        .await?;
        let Some(own) = mounts.iter().find(|m| m.owned()).cloned() else {
            return Err(MetaError::NotFound("no such shared folder".into()));
        };
        for m in mounts.iter().filter(|m| !m.owned()) {
            drop_mount(&mut w, m).await?;
        }
        sqlx::query("DELETE FROM mounts WHERE user_id = $1 AND namespace_id = $2")
            .bind(owner.id)
            .bind(ns)
            .execute(&mut *w.tx)
            .await?;
        // Uploads under way into it end; their blocks go to collection.
        sqlx::query("DELETE FROM upload_blocks WHERE namespace_id = $1")
            .bind(ns)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("DELETE FROM upload_sessions WHERE namespace_id = $1")
            .bind(ns)
            .execute(&mut *w.tx)
            .await?;
        // Its trash keeps where each item was, now below the folder.
        sqlx::query(
            "UPDATE nodes SET deleted_path = $1 || deleted_path
             WHERE namespace_id = $2 AND deleted_path IS NOT NULL",
        )
        .bind(format!("/{}", own.name))
        .bind(ns)
        .execute(&mut *w.tx)
        .await?;
        // Where it goes back to: the folder of the owner's own that held
        // the mount point (the top when there is none). Found before the
        // folder's own root joins the namespace.
        let home = match own.point().parent() {
            Some(up) => resolve(&mut w.tx, owner.root_ns, &up).await?,
            None => None,
        };
        let top = match home {
            Some(folder) if folder.is_folder() => folder,
            _ => root(&mut w.tx, owner.root_ns).await?,
        };
        // Everything the namespace holds goes home, trash included.
        for table in NODE_TABLES.iter().chain(["nodes"].iter()) {
            let sql = format!("UPDATE {table} SET namespace_id = $1 WHERE namespace_id = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(owner.root_ns)
                .bind(ns)
                .execute(&mut *w.tx)
                .await?;
        }
        let shown = format!("/{}", own.name);
        let name = own.point().name().unwrap_or_default().to_owned();
        // Named as the owner last called it (a move of the mount point
        // renamed nothing in the folder itself).
        sqlx::query(
            "UPDATE nodes SET parent_id = $1, deleted_ms = $2, deleted_path = $3, name = $4,
                name_key = $5
             WHERE namespace_id = $6 AND id = $7",
        )
        .bind(&top.id)
        .bind(w.now)
        .bind(&shown)
        .bind(&name)
        .bind(fold_name(&name))
        .bind(owner.root_ns)
        .bind(&own.root_id)
        .execute(&mut *w.tx)
        .await?;
        let node = mount_node(&own, owner.root_ns, &name);
        w.event(ChangeKind::Delete, &node, &shown, None);
        w.commit().await?;
        Ok(())
    }

    /// Moves `user_id`'s mount of `ns` to `to` among their own folders; no
    /// one else's changes.
    pub async fn rename_mount(
        &self,
        user_id: i64,
        ns: i64,
        to: &RemotePath,
        device: &str,
    ) -> Result<()> {
        let root_ns = root_ns_of(&self.pool, user_id).await?;
        let mut w = Writer::begin(self, root_ns, device).await?;
        let mount = mount_of(&mut w.tx, user_id, ns)
            .await?
            .ok_or_else(|| MetaError::NotFound("no such shared folder".into()))?;
        let (Some(_), Some(up)) = (to.name(), to.parent()) else {
            return Err(MetaError::Invalid(
                "a shared folder cannot take the place of the top of your files".into(),
            ));
        };
        if mount.point() == *to {
            return Ok(());
        }
        match resolve(&mut w.tx, root_ns, &up).await? {
            Some(folder) if folder.is_folder() => {}
            Some(_) => return Err(MetaError::NotAFolder(up.to_string())),
            None => return Err(MetaError::NotFound(format!("{up} does not exist"))),
        }
        if name_taken(&mut w.tx, user_id, root_ns, to).await? {
            return Err(MetaError::AlreadyExists(format!("{to} already exists")));
        }
        if let Some(other) = mounts_of_owner_of(&mut w.tx, root_ns)
            .await?
            .into_iter()
            .find(|m| m.namespace_id != ns && m.holds(to))
        {
            return Err(MetaError::Invalid(format!(
                "{to} is inside the shared folder /{}: a shared folder cannot hold another",
                other.name
            )));
        }
        set_point(&mut w, &mount, root_ns, to).await?;
        w.commit().await?;
        Ok(())
    }
}

/// The journals a change to the shared folder `ns` may write: its own and
/// each member's own files' (where their mount is journaled).
async fn circle(conn: &mut Conn, ns: i64) -> Result<Vec<i64>> {
    let mut out: Vec<i64> = sqlx::query_as::<_, (i64,)>(
        "SELECT u.root_ns FROM mounts m JOIN users u ON u.id = m.user_id
         WHERE m.namespace_id = $1",
    )
    .bind(ns)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(root,)| root)
    .collect();
    out.push(ns);
    Ok(out)
}

/// How often the locks of a change to a shared folder are taken again when
/// its members changed between looking them up and locking.
const LOCK_TRIES: usize = 5;

/// Begins a change in `ns` to the shared folder `shared`, holding its
/// circle's journals and `also` (see [`Writer::begin_all`]). The members
/// are looked up before the locks and again under them (membership only
/// changes under the folder's lock, so the second answer stands): should
/// they differ, the locks are let go and taken again.
async fn begin_circle(
    store: &Store,
    ns: i64,
    shared: i64,
    also: &[i64],
    device: &str,
) -> Result<Writer> {
    for _ in 0..LOCK_TRIES {
        let mut want = {
            let mut conn = store.pool.acquire().await?;
            circle(&mut conn, shared).await?
        };
        want.extend_from_slice(also);
        let mut w = Writer::begin_all(store, ns, &want, device).await?;
        let now = circle(&mut w.tx, shared).await?;
        if now.iter().all(|n| w.holds(*n)) {
            return Ok(w);
        }
    }
    Err(MetaError::Contended(
        "the shared folder's members kept changing while this change waited".into(),
    ))
}

/// Begins `owner` sharing `path` with `member`: holds both users' own
/// journals and, when `path` is a shared folder already, its circle's.
/// Returns the owner's mount at `path`, read under the locks.
async fn begin_sharing(
    store: &Store,
    owner: &UserRow,
    path: &RemotePath,
    member: &UserRow,
    device: &str,
) -> Result<(Writer, Option<MountRow>)> {
    for _ in 0..LOCK_TRIES {
        let known = {
            let mut conn = store.pool.acquire().await?;
            mount_at(&mut conn, owner.id, path).await?
        };
        let mut w = match &known {
            Some(m) => {
                begin_circle(
                    store,
                    owner.root_ns,
                    m.namespace_id,
                    &[member.root_ns],
                    device,
                )
                .await?
            }
            None => Writer::begin_all(store, owner.root_ns, &[member.root_ns], device).await?,
        };
        let now = mount_at(&mut w.tx, owner.id, path).await?;
        if now.as_ref().map(|m| m.namespace_id) == known.as_ref().map(|m| m.namespace_id) {
            return Ok((w, now));
        }
    }
    Err(MetaError::Contended(format!(
        "{path} kept changing while this share waited"
    )))
}

/// Refuses `user_id` a change to `ns` unless `ns` holds their own files or
/// a shared folder they may change. Run under `ns`'s lock, which role
/// changes and removals take too: the API's look at the role before the
/// lock could be stale by the time the change lands.
pub(super) async fn may_write(conn: &mut Conn, user_id: i64, ns: i64) -> Result<()> {
    // A request that began before its account was disabled or deleted (a
    // long upload) must not land after it. No lock: a change committing
    // as the account is deleted is one made just before, and the files
    // of a deleted account stay as they are until it is purged.
    let active: Option<(i64,)> = sqlx::query_as(
        "SELECT id FROM users WHERE id = $1 AND disabled_ms IS NULL AND deleted_ms IS NULL",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    if active.is_none() {
        return Err(MetaError::Forbidden(
            "this account was disabled or deleted: nothing was changed".into(),
        ));
    }
    let allowed: Option<(i64,)> = sqlx::query_as(
        "SELECT id FROM users WHERE id = $1 AND root_ns = $2
         UNION ALL
         SELECT user_id FROM mounts WHERE user_id = $1 AND namespace_id = $2 AND role <> 'viewer'
         LIMIT 1",
    )
    .bind(user_id)
    .bind(ns)
    .fetch_optional(&mut *conn)
    .await?;
    match allowed {
        Some(_) => Ok(()),
        None => Err(MetaError::Forbidden(
            "you may no longer change this shared folder: its owner made you a viewer or \
             removed you"
                .into(),
        )),
    }
}

/// A path as the `mounts` table keeps it: without the leading `/`.
fn stored(path: &RemotePath) -> &str {
    path.as_str().trim_start_matches('/')
}

/// Moves a mount point to `to` and journals the move in the member's own
/// files (`root_ns`, the writer's namespace).
async fn set_point(w: &mut Writer, m: &MountRow, root_ns: i64, to: &RemotePath) -> Result<()> {
    sqlx::query("UPDATE mounts SET name = $1 WHERE user_id = $2 AND namespace_id = $3")
        .bind(stored(to))
        .bind(m.user_id)
        .bind(m.namespace_id)
        .execute(&mut *w.tx)
        .await
        .map_err(|e| map_unique(e, || format!("{to} already exists")))?;
    let node = mount_node(m, root_ns, to.name().unwrap_or_default());
    let old = format!("/{}", m.name);
    w.event(ChangeKind::Move, &node, to.as_str(), Some(&old));
    Ok(())
}

/// The mounts of the user whose own files `ns` holds (none when `ns` is
/// a shared folder's).
async fn mounts_of_owner_of(conn: &mut Conn, ns: i64) -> Result<Vec<MountRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        mount_cols!(),
        " FROM mounts m JOIN namespaces n ON n.id = m.namespace_id
          JOIN users u ON u.id = m.user_id
          WHERE u.root_ns = $1 ORDER BY m.name"
    ))
    .bind(ns)
    .fetch_all(&mut *conn)
    .await?)
}

/// After `from` moved to `to` in the user's own files `ns`, in the same
/// transaction: the mounts inside it move along (the journal's move of
/// `from` already tells their devices).
pub(super) async fn carry_mounts(
    conn: &mut Conn,
    ns: i64,
    from: &RemotePath,
    to: &RemotePath,
) -> Result<()> {
    for m in mounts_of_owner_of(conn, ns).await? {
        let point = m.point();
        if point == *from || !point.starts_with(from) {
            continue;
        }
        let mut moved = to.clone();
        for seg in point.segments().skip(from.segments().count()) {
            moved = moved.join(seg).map_err(|e| {
                MetaError::Invalid(format!("{to} is too deep for /{}: {e}", m.name))
            })?;
        }
        sqlx::query("UPDATE mounts SET name = $1 WHERE user_id = $2 AND namespace_id = $3")
            .bind(stored(&moved))
            .bind(m.user_id)
            .bind(m.namespace_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Before `path` goes to the trash in the user's own files (the writer's
/// namespace): the mounts inside it move to the top of their files, each
/// journaled as a move, so no shared folder goes with it.
pub(super) async fn lift_mounts(w: &mut Writer, path: &RemotePath) -> Result<()> {
    let ns = w.ns;
    for m in mounts_of_owner_of(&mut w.tx, ns).await? {
        let point = m.point();
        if point == *path || !point.starts_with(path) {
            continue;
        }
        let name = point.name().unwrap_or_default();
        let free = free_name(&mut w.tx, m.user_id, ns, name).await?;
        let to = RemotePath::root()
            .join(&free)
            .map_err(|e| MetaError::Invalid(e.to_string()))?;
        set_point(w, &m, ns, &to).await?;
    }
    Ok(())
}

async fn mount_at(conn: &mut Conn, user_id: i64, path: &RemotePath) -> Result<Option<MountRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        mount_cols!(),
        " FROM mounts m JOIN namespaces n ON n.id = m.namespace_id
          WHERE m.user_id = $1 AND m.name = $2"
    ))
    .bind(user_id)
    .bind(stored(path))
    .fetch_optional(&mut *conn)
    .await?)
}

async fn mount_of(conn: &mut Conn, user_id: i64, ns: i64) -> Result<Option<MountRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        mount_cols!(),
        " FROM mounts m JOIN namespaces n ON n.id = m.namespace_id
          WHERE m.user_id = $1 AND m.namespace_id = $2"
    ))
    .bind(user_id)
    .bind(ns)
    .fetch_optional(&mut *conn)
    .await?)
}

async fn root_ns_of(pool: &Pool<Db>, user_id: i64) -> Result<i64> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT root_ns FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?;
    row.map(|(ns,)| ns)
        .ok_or_else(|| MetaError::NotFound("no such user".into()))
}

/// Refuses anyone but the owner of the shared folder `ns`, saying no more
/// than that it is not theirs to change.
async fn must_own(conn: &mut Conn, user_id: i64, ns: i64) -> Result<()> {
    match mount_of(conn, user_id, ns).await? {
        Some(m) if m.owned() => Ok(()),
        Some(m) => Err(MetaError::Forbidden(format!(
            "only the owner of /{} can change who has it",
            m.name
        ))),
        None => Err(MetaError::NotFound("no such shared folder".into())),
    }
}

/// Whether `path` in the user's files is taken, by a folder or file of
/// their own (trash aside) or by a mount.
async fn name_taken(
    conn: &mut Conn,
    user_id: i64,
    root_ns: i64,
    path: &RemotePath,
) -> Result<bool> {
    Ok(resolve(conn, root_ns, path).await?.is_some()
        || mount_at(conn, user_id, path).await?.is_some())
}

/// `name` or the first `name (n)` free at the top of the user's files.
async fn free_name(conn: &mut Conn, user_id: i64, root_ns: i64, name: &str) -> Result<String> {
    for n in 1..=1000u64 {
        let candidate = if n == 1 {
            name.to_owned()
        } else {
            numbered_within(name, n)
        };
        let at = RemotePath::root()
            .join(&candidate)
            .map_err(|e| MetaError::Invalid(e.to_string()))?;
        if !name_taken(conn, user_id, root_ns, &at).await? {
            return Ok(candidate);
        }
    }
    Err(MetaError::AlreadyExists(format!(
        "a thousand things at the top of the files are named like /{name}"
    )))
}

/// The mount point as a node of the member's root namespace, for journal
/// entries: the shared folder's root node, named as the member calls it.
fn mount_node(m: &MountRow, root_ns: i64, name: &str) -> NodeRow {
    NodeRow {
        namespace_id: root_ns,
        id: m.root_id.clone(),
        parent_id: None,
        name: name.to_owned(),
        kind: "folder".into(),
        rev: 0,
        size: 0,
        content_hash: None,
        modified_ms: now_ms(),
        pending_ms: None,
    }
}

/// Moves the folder at `path` in the owner's own files into a new
/// namespace, journals its contents there, and mounts it for the owner in
/// the same place. Returns the new namespace.
async fn make_shared(w: &mut Writer, owner: &UserRow, path: &RemotePath) -> Result<i64> {
    let from = owner.root_ns;
    let folder = resolve(&mut w.tx, from, path)
        .await?
        .ok_or_else(|| MetaError::NotFound(format!("{path} does not exist")))?;
    if !folder.is_folder() {
        return Err(MetaError::NotAFolder(path.to_string()));
    }
    if let Some(inner) = mounts_of_owner_of(&mut w.tx, from)
        .await?
        .into_iter()
        .find(|m| m.point().starts_with(path))
    {
        return Err(MetaError::Invalid(format!(
            "{path} holds the shared folder /{}, and a shared folder cannot hold another: \
             move /{} out of it first, or share it on its own",
            inner.name, inner.name
        )));
    }
    let (ns,): (i64,) = sqlx::query_as(
        "INSERT INTO namespaces (owner_user_id, root_node_id) VALUES ($1, $2) RETURNING id",
    )
    .bind(owner.id)
    .bind(&folder.id)
    .fetch_one(&mut *w.tx)
    .await?;
    // The rows hanging off nodes first: the walk reads the nodes where
    // they still are.
    for table in NODE_TABLES {
        let sql = format!(
            "{SUBTREE} UPDATE {table} SET namespace_id = $3
             WHERE namespace_id = $1 AND node_id IN (SELECT id FROM sub)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(&folder.id)
            .bind(ns)
            .execute(&mut *w.tx)
            .await?;
    }
    let sql = format!(
        "{SUBTREE} UPDATE nodes SET namespace_id = $3
         WHERE namespace_id = $1 AND id IN (SELECT id FROM sub)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(&folder.id)
        .bind(ns)
        .execute(&mut *w.tx)
        .await?;
    sqlx::query("UPDATE nodes SET parent_id = NULL WHERE namespace_id = $1 AND id = $2")
        .bind(ns)
        .bind(&folder.id)
        .execute(&mut *w.tx)
        .await?;
    // Uploads under way into the folder finish there: their target is
    // now inside the new namespace.
    let prefix = format!("{path}/");
    // Characters, as `substr` counts them.
    let cut = prefix.chars().count() as i64;
    // The sessions first: a PATCH under way holds its session's row, so
    // this waits for it, and its blocks are moved after it.
    sqlx::query(
        "UPDATE upload_sessions SET namespace_id = $1, path = substr(path, CAST($3 AS INTEGER))
         WHERE namespace_id = $2 AND substr(path, 1, CAST($3 AS INTEGER)) = $4 AND done_path IS NULL",
    )
    .bind(ns)
    .bind(from)
    .bind(cut)
    .bind(&prefix)
    .execute(&mut *w.tx)
    .await?;
    sqlx::query(
        "UPDATE upload_blocks SET namespace_id = $1
         WHERE namespace_id = $2 AND session_id IN (
             SELECT id FROM upload_sessions WHERE namespace_id = $1)",
    )
    .bind(ns)
    .bind(from)
    .execute(&mut *w.tx)
    .await?;
    // Its trash keeps where each item was, now inside the folder.
    sqlx::query(
        "UPDATE nodes SET deleted_path = substr(deleted_path, CAST($2 AS INTEGER))
         WHERE namespace_id = $1 AND deleted_path IS NOT NULL
           AND substr(deleted_path, 1, CAST($2 AS INTEGER)) = $3",
    )
    .bind(ns)
    .bind(cut)
    .bind(&prefix)
    .execute(&mut *w.tx)
    .await?;
    describe(w, ns, &folder.id).await?;
    let owner_mount = MountRow {
        user_id: owner.id,
        namespace_id: ns,
        name: stored(path).to_owned(),
        role: "owner".into(),
        mount_seq: 0,
        root_id: folder.id.clone(),
        owner_id: owner.id,
    };
    let seq = w
        .event_in(
            from,
            ChangeKind::Mkdir,
            &mount_node(&owner_mount, from, path.name().unwrap_or_default()),
            path.as_str(),
            None,
        )
        .await?;
    insert_mount(&mut w.tx, &owner_mount, seq, w.now).await?;
    Ok(ns)
}

/// Journals every live folder and file of the new namespace `ns`, parents
/// before children, so its journal read from the start rebuilds it.
async fn describe(w: &mut Writer, ns: i64, root_id: &str) -> Result<()> {
    let mut queue = VecDeque::from([(root_id.to_owned(), RemotePath::root())]);
    let mut seen = HashSet::from([root_id.to_owned()]);
    while let Some((id, at)) = queue.pop_front() {
        let children: Vec<NodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            node_cols!(),
            " FROM nodes WHERE namespace_id = $1 AND parent_id = $2 AND deleted_ms IS NULL
              ORDER BY name"
        ))
        .bind(ns)
        .bind(&id)
        .fetch_all(&mut *w.tx)
        .await?;
        for node in children {
            let path = at
                .join(&node.name)
                .map_err(|e| MetaError::Invalid(e.to_string()))?;
            if node.is_folder() {
                if !seen.insert(node.id.clone()) {
                    return Err(MetaError::Cycle(format!("{} is its own ancestor", node.id)));
                }
                w.event_in(ns, ChangeKind::Mkdir, &node, path.as_str(), None)
                    .await?;
                queue.push_back((node.id.clone(), path));
            } else if node.rev > 0 {
                w.event_in(ns, ChangeKind::Commit, &node, path.as_str(), None)
                    .await?;
            }
            w.write_some().await?;
        }
    }
    Ok(())
}

/// Mounts `ns` at the top of `member`'s files, under `name` or the first
/// free `name (n)`, and lets them fetch every block the folder uses.
async fn add_member(
    w: &mut Writer,
    ns: i64,
    member: &UserRow,
    role: &str,
    name: &str,
) -> Result<MountRow> {
    let free = free_name(&mut w.tx, member.id, member.root_ns, name).await?;
    let (root_id, owner_id): (String, Option<i64>) =
        sqlx::query_as("SELECT root_node_id, owner_user_id FROM namespaces WHERE id = $1")
            .bind(ns)
            .fetch_one(&mut *w.tx)
            .await?;
    let mount = MountRow {
        user_id: member.id,
        namespace_id: ns,
        name: free.clone(),
        role: role.to_owned(),
        mount_seq: 0,
        root_id,
        owner_id: owner_id.unwrap_or_default(),
    };
    let seq = w
        .event_in(
            member.root_ns,
            ChangeKind::Mkdir,
            &mount_node(&mount, member.root_ns, &free),
            &format!("/{free}"),
            None,
        )
        .await?;
    insert_mount(&mut w.tx, &mount, seq, w.now).await?;
    sqlx::query(
        "INSERT INTO user_blocks (user_id, block_id)
         SELECT DISTINCT $1, block_id FROM revision_blocks WHERE namespace_id = $2
         ON CONFLICT DO NOTHING",
    )
    .bind(member.id)
    .bind(ns)
    .execute(&mut *w.tx)
    .await?;
    Ok(MountRow {
        mount_seq: seq,
        ..mount
    })
}

/// `name (n)`, the name shortened until that is still a valid name.
fn numbered_within(name: &str, n: u64) -> String {
    let mut base = name.to_owned();
    loop {
        let candidate = numbered_name(&base, n);
        if RemotePath::root().join(&candidate).is_ok() || base.is_empty() {
            return candidate;
        }
        base.pop();
    }
}

async fn insert_mount(tx: &mut Tx, m: &MountRow, seq: i64, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO mounts (user_id, namespace_id, name, role, mount_seq, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(m.user_id)
    .bind(m.namespace_id)
    .bind(&m.name)
    .bind(&m.role)
    .bind(seq)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| map_unique(e, || format!("/{} already exists", m.name)))?;
    Ok(())
}

/// Sets a member's role and wakes their devices with a journal entry at
/// the mount (a `mkdir` of a folder they have: nothing for them to do but
/// look again).
async fn change_role(w: &mut Writer, m: &MountRow, role: &str) -> Result<()> {
    if m.role == role {
        return Ok(());
    }
    sqlx::query("UPDATE mounts SET role = $1 WHERE user_id = $2 AND namespace_id = $3")
        .bind(role)
        .bind(m.user_id)
        .bind(m.namespace_id)
        .execute(&mut *w.tx)
        .await?;
    let root_ns = root_ns_in(&mut w.tx, m.user_id).await?;
    w.event_in(
        root_ns,
        ChangeKind::Mkdir,
        &mount_node(m, root_ns, m.point().name().unwrap_or_default()),
        &format!("/{}", m.name),
        None,
    )
    .await?;
    Ok(())
}

/// Removes a mount and journals it gone from the member's files: their
/// devices move their copies to the local trash. The blocks they could
/// fetch only through the folder are theirs no longer (those their own
/// files or other shared folders use stay).
async fn drop_mount(w: &mut Writer, m: &MountRow) -> Result<()> {
    sqlx::query("DELETE FROM mounts WHERE user_id = $1 AND namespace_id = $2")
        .bind(m.user_id)
        .bind(m.namespace_id)
        .execute(&mut *w.tx)
        .await?;
    // Their links into it stop answering with the mount gone; removed, so
    // none comes back should they be given the folder again.
    sqlx::query("DELETE FROM links WHERE user_id = $1 AND namespace_id = $2")
        .bind(m.user_id)
        .bind(m.namespace_id)
        .execute(&mut *w.tx)
        .await?;
    let root_ns = root_ns_in(&mut w.tx, m.user_id).await?;
    sqlx::query(
        "DELETE FROM user_blocks WHERE user_id = $1
           AND block_id IN (SELECT block_id FROM revision_blocks WHERE namespace_id = $2)
           AND block_id NOT IN (
               SELECT rb.block_id FROM revision_blocks rb
               WHERE rb.namespace_id = $3
                  OR rb.namespace_id IN (SELECT namespace_id FROM mounts WHERE user_id = $1))",
    )
    .bind(m.user_id)
    .bind(m.namespace_id)
    .bind(root_ns)
    .execute(&mut *w.tx)
    .await?;
    w.event_in(
        root_ns,
        ChangeKind::Delete,
        &mount_node(m, root_ns, m.point().name().unwrap_or_default()),
        &format!("/{}", m.name),
        None,
    )
    .await?;
    Ok(())
}

async fn root_ns_in(tx: &mut Tx, user_id: i64) -> Result<i64> {
    let (ns,): (i64,) = sqlx::query_as("SELECT root_ns FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(ns)
}
