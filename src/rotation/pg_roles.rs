//! Roles on a Postgres resource's target. A window whose managed role may
//! create roles or grant memberships (CREATEROLE, ADMIN OPTION) can leave a
//! login of its own behind, and any window can change the settings the
//! next holder's sessions start with (`ALTER ROLE CURRENT_USER SET
//! search_path ...`). Each role's attributes, settings and memberships are
//! fingerprinted (passwords are not visible to the managed role, and are
//! not compared); `baseline` says what changed since the last look.

use sha2::{Digest, Sha256};

use super::RotationError;
use super::baseline::Fingerprints;

/// One row per role but the predefined `pg_*` ones: its name, and its
/// attributes, per-database settings and memberships as one text.
const LIST_ROLES: &str = "SELECT r.rolname::text, concat_ws('|', \
       r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, \
       r.rolreplication, r.rolbypassrls, r.rolconnlimit, \
       extract(epoch FROM r.rolvaliduntil), \
       (SELECT string_agg(s.setdatabase::text || ':' || s.setconfig::text, ';' \
                          ORDER BY s.setdatabase) \
          FROM pg_db_role_setting s WHERE s.setrole = r.oid), \
       (SELECT string_agg(g.rolname || CASE WHEN m.admin_option THEN '+admin' ELSE '' END, \
                          ',' ORDER BY g.rolname, m.grantor) \
          FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
         WHERE m.member = r.oid)) \
     FROM pg_roles r WHERE r.rolname !~ '^pg_' ORDER BY 1";

/// Role name → sha256 of what `LIST_ROLES` says of it.
pub async fn fingerprint(client: &tokio_postgres::Client) -> Result<Fingerprints, RotationError> {
    let failed = |e: tokio_postgres::Error| {
        RotationError::Target(format!("listing the target's roles: {e}"))
    };
    let rows = client.query(LIST_ROLES, &[]).await.map_err(failed)?;
    rows.iter()
        .map(|row| {
            let name: String = row.try_get(0).map_err(failed)?;
            let described: String = row.try_get(1).map_err(failed)?;
            Ok((name, hex::encode(Sha256::digest(described.as_bytes()))))
        })
        .collect()
}
