//! `hodei pools`: each worker pool's state, workers by phase, create
//! latency and what it is doing or failing at.

use serde_json::Value;

use super::client::ApiClient;

/// Prints the pools as a table, then one line per pool with something to
/// say (its activity or its last error).
pub async fn run(client: &ApiClient) -> anyhow::Result<()> {
    let body = client.get("/api/v1/pools").await?;
    let pools = body["pools"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<20} {:<10} {:<9} {:>7} {:>9} {:>9} {:>8} {:>9}",
        "POOL", "PROVIDER", "STATE", "MIN-MAX", "STARTING", "CONNECTED", "DRAINING", "START P50"
    );
    for pool in &pools {
        let count = |phase: &str| pool["counts"][phase].as_u64().unwrap_or(0);
        let latency = pool["create_latency"]["p50_ms"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
        println!(
            "{:<20} {:<10} {:<9} {:>7} {:>9} {:>9} {:>8} {:>9}",
            text(pool, "name"),
            text(pool, "provider"),
            text(pool, "state"),
            format!(
                "{}-{}",
                pool["min"].as_u64().unwrap_or(0),
                pool["max"].as_u64().unwrap_or(0)
            ),
            count("REQUESTED") + count("STARTING"),
            count("CONNECTED"),
            count("DRAINING"),
            latency,
        );
    }
    for pool in &pools {
        if let Some(activity) = pool["activity"].as_str() {
            println!("{}: {activity}", text(pool, "name"));
        } else if let Some(error) = pool["last_error"].as_str() {
            println!("{}: last error: {error}", text(pool, "name"));
        }
    }
    Ok(())
}

fn text<'a>(pool: &'a Value, key: &str) -> &'a str {
    pool[key].as_str().unwrap_or("-")
}
