//! Helpers shared by the load tools (`src/bin/sluice-producer-perf.rs`,
//! `src/bin/sluice-consumer-perf.rs`): Java-style `.properties` files and `k=v` pairs turned
//! into librdkafka config, the Java tools' date format, and librdkafka statistics printed the
//! way `--print-metrics` prints Java client metrics.
//!
//! Nothing here knows about Sluice: the tools talk to any Kafka-compatible broker.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::statistics::{Statistics, Window};

/// Reads a Java `.properties` file as (key, value) pairs in file order: `key=value` or
/// `key: value` lines, `#` and `!` comments, blank lines skipped. Line continuations and
/// escapes are not supported (client configs do not use them); a line without a separator is
/// an error rather than a silently dropped setting.
pub fn read_properties(path: &Path) -> io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let separator = line.find(['=', ':']).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}:{}: '{line}' is not key=value",
                    path.display(),
                    index + 1
                ),
            )
        })?;
        let (key, value) = line.split_at(separator);
        pairs.push((key.trim().to_string(), value[1..].trim().to_string()));
    }
    Ok(pairs)
}

/// Parses one `key=value` command-line pair (`--producer-props acks=1`). The value may be
/// empty or contain `=`; the key may not be empty.
pub fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("'{arg}' is not key=value")),
    }
}

/// Formats `time` as the Java perf tools' default `yyyy-MM-dd HH:mm:ss:SSS`, in UTC (the
/// Java tools use the JVM's time zone).
pub fn format_java_date(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let secs_of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}:{:03}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Prints librdkafka statistics as the Java tools' `--print-metrics` prints client metrics:
/// a `Metric Name` / `Value` table of `group:name:{tags}` rows, sorted by name. Only the
/// counters and latency windows a throughput run is read for are shown; the full JSON is
/// what `statistics.interval.ms` delivers to any librdkafka application.
pub fn print_metrics(stats: &Statistics) {
    let mut rows: BTreeMap<String, f64> = BTreeMap::new();
    let client = format!("{{client-id={}}}", stats.client_id);
    let top = [
        ("tx", stats.tx as f64),
        ("tx-bytes", stats.tx_bytes as f64),
        ("rx", stats.rx as f64),
        ("rx-bytes", stats.rx_bytes as f64),
        ("txmsgs", stats.txmsgs as f64),
        ("txmsg-bytes", stats.txmsg_bytes as f64),
        ("rxmsgs", stats.rxmsgs as f64),
        ("rxmsg-bytes", stats.rxmsg_bytes as f64),
        ("msg-cnt", stats.msg_cnt as f64),
        ("msg-size", stats.msg_size as f64),
    ];
    for (name, value) in top {
        rows.insert(
            format!("{}-metrics:{name}:{client}", stats.client_type),
            value,
        );
    }
    for broker in stats.brokers.values().filter(|b| b.nodeid >= 0) {
        let tags = format!(
            "{{client-id={}, node-id={}}}",
            stats.client_id, broker.nodeid
        );
        let counters = [
            ("tx", broker.tx as f64),
            ("txbytes", broker.txbytes as f64),
            ("txerrs", broker.txerrs as f64),
            ("txretries", broker.txretries as f64),
            ("req-timeouts", broker.req_timeouts as f64),
            ("rx", broker.rx as f64),
            ("rxbytes", broker.rxbytes as f64),
            ("rxerrs", broker.rxerrs as f64),
            ("connects", broker.connects.unwrap_or(0) as f64),
            ("disconnects", broker.disconnects.unwrap_or(0) as f64),
        ];
        for (name, value) in counters {
            rows.insert(format!("broker-metrics:{name}:{tags}"), value);
        }
        for (request, count) in broker.req.iter().filter(|(_, count)| **count > 0) {
            rows.insert(
                format!("broker-metrics:requests-{request}:{tags}"),
                *count as f64,
            );
        }
        let windows = [
            ("int-latency-us", &broker.int_latency),
            ("outbuf-latency-us", &broker.outbuf_latency),
            ("rtt-us", &broker.rtt),
            ("throttle-ms", &broker.throttle),
        ];
        for (name, window) in windows {
            if let Some(window) = window {
                insert_window(&mut rows, "broker-metrics", name, &tags, window);
            }
        }
    }
    for topic in stats.topics.values() {
        let tags = format!("{{client-id={}, topic={}}}", stats.client_id, topic.topic);
        insert_window(
            &mut rows,
            "topic-metrics",
            "batchsize-bytes",
            &tags,
            &topic.batchsize,
        );
        insert_window(
            &mut rows,
            "topic-metrics",
            "batchcnt-msgs",
            &tags,
            &topic.batchcnt,
        );
    }
    let width = rows.keys().map(String::len).max().unwrap_or(0).max(11);
    println!();
    println!("{:<width$} : Value", "Metric Name");
    for (name, value) in &rows {
        println!("{name:<width$} : {value:.3}");
    }
}

fn insert_window(
    rows: &mut BTreeMap<String, f64>,
    group: &str,
    name: &str,
    tags: &str,
    window: &Window,
) {
    if window.cnt == 0 {
        return;
    }
    for (suffix, value) in [
        ("avg", window.avg),
        ("p50", window.p50),
        ("p99", window.p99),
        ("max", window.max),
    ] {
        rows.insert(format!("{group}:{name}-{suffix}:{tags}"), value as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn java_date_format_in_utc() {
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(format_java_date(time), "2023-11-14 22:13:20:123");
        assert_eq!(format_java_date(UNIX_EPOCH), "1970-01-01 00:00:00:000");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_java_date(leap_day), "2000-02-29 00:00:00:000");
    }

    #[test]
    fn properties_and_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.properties");
        std::fs::write(
            &path,
            "# comment\n! also\n\nacks = all\nlinger.ms: 5\nsasl.jaas=a=b\n",
        )
        .unwrap();
        let pairs = read_properties(&path).unwrap();
        assert_eq!(
            pairs,
            [("acks", "all"), ("linger.ms", "5"), ("sasl.jaas", "a=b")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        std::fs::write(&path, "acks\n").unwrap();
        assert!(read_properties(&path).is_err());
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("x").is_err());
    }
}
