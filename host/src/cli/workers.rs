//! `hodei workers`.

use super::client::ApiClient;

/// Prints the workers the host knows.
pub async fn run(client: &ApiClient) -> anyhow::Result<()> {
    let body = client.get("/api/v1/workers").await?;
    println!(
        "{:<20}  {:<9}  {:>5}  {:>6}  {:>9}  LABELS",
        "NAME", "STATE", "SLOTS", "CPU%", "MEM USED"
    );
    for w in body["workers"].as_array().into_iter().flatten() {
        let labels = w["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let mem_mb = w["metrics"]["memory_used_bytes"].as_u64().unwrap_or(0) / (1024 * 1024);
        println!(
            "{:<20}  {:<9}  {:>2}/{:<2}  {:>6.1}  {:>6} MB  {}",
            w["name"].as_str().unwrap_or("-"),
            if w["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "away"
            },
            w["used_slots"].as_u64().unwrap_or(0),
            w["slots"].as_u64().unwrap_or(0),
            w["metrics"]["cpu_percent"].as_f64().unwrap_or(0.0),
            mem_mb,
            labels,
        );
    }
    Ok(())
}
