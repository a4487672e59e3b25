//! What `vigil bench --scenario watch` polls: a MariaDB/MySQL database with a `services` table
//! of Cinder's shape (its columns and types as `cinder-manage db sync` creates them on MySQL)
//! holding many rows. Only with the `bench` feature; the one place besides `store/` and
//! [`super::reader`] that holds SQL, and the only one that writes a watched kind of table, for
//! the benchmark's own throw-away database.

use sqlx::{Connection, Executor, MySqlConnection};

/// A throw-away database of `rows` Cinder services on the server of `admin_url`
/// (`mysql://root@127.0.0.1:3306/test`); its URL. Drop it with [`drop_database`].
pub async fn create(admin_url: &str, name: &str, rows: usize) -> Result<String, sqlx::Error> {
    let mut admin = MySqlConnection::connect(admin_url).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
        .await?;
    admin
        .execute(format!("CREATE DATABASE `{name}`").as_str())
        .await?;
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
    let url = format!("{base}/{name}");
    let mut db = MySqlConnection::connect(&url).await?;
    db.execute(
        "CREATE TABLE services (
            created_at DATETIME, updated_at DATETIME, deleted_at DATETIME, deleted BOOL,
            id INT NOT NULL AUTO_INCREMENT, uuid VARCHAR(36), cluster_name VARCHAR(255),
            host VARCHAR(255), `binary` VARCHAR(255), topic VARCHAR(255),
            report_count INT NOT NULL, disabled BOOL, availability_zone VARCHAR(255),
            disabled_reason VARCHAR(255), modified_at DATETIME, rpc_current_version VARCHAR(36),
            object_current_version VARCHAR(36), replication_status VARCHAR(36),
            active_backend_id VARCHAR(255), frozen BOOL NOT NULL DEFAULT 0,
            PRIMARY KEY (id), KEY services_uuid_idx (uuid)
        ) ENGINE=InnoDB",
    )
    .await?;
    const CHUNK: usize = 5_000;
    let mut id = 0;
    while id < rows {
        let end = (id + CHUNK).min(rows);
        let values: Vec<String> = (id..end)
            .map(|i| {
                format!(
                    "(UTC_TIMESTAMP(), UTC_TIMESTAMP(), 0, {n}, 'vol-{n:07}', 'cinder-volume', \
                     'cinder-volume', {count}, 0, 'az{zone}', 0)",
                    n = i + 1,
                    count = i % 1000,
                    zone = i % 3
                )
            })
            .collect();
        db.execute(
            format!(
                "INSERT INTO services (created_at, updated_at, deleted, id, host, `binary`, topic, \
                 report_count, disabled, availability_zone, frozen) VALUES {}",
                values.join(",")
            )
            .as_str(),
        )
        .await?;
        id = end;
    }
    Ok(url)
}

/// One round of `report_state` for every `every`-th row.
pub async fn beat(url: &str, every: usize) -> Result<u64, sqlx::Error> {
    let mut db = MySqlConnection::connect(url).await?;
    let done = db
        .execute(
            format!(
                "UPDATE services SET report_count = report_count + 1, updated_at = UTC_TIMESTAMP() \
                 WHERE id % {every} = 0"
            )
            .as_str(),
        )
        .await?;
    Ok(done.rows_affected())
}

pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = MySqlConnection::connect(admin_url).await?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
        .await?;
    Ok(())
}
