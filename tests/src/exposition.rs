//! Reading a Prometheus text exposition (a real scrape).

/// The value of the sample `name{labels…}` whose labels include `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let rest = rest.trim_end_matches('}');
        labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")))
            .then(|| value.parse().unwrap())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_sample_by_name_and_some_labels() {
        let text = "# TYPE h histogram\nh_bucket{group=\"a\",le=\"+Inf\"} 3\nh_count{group=\"a\"} 3\nh_count{group=\"b\"} 1\n";
        assert_eq!(sample(text, "h_count", &[("group", "b")]), Some(1.0));
        assert_eq!(sample(text, "h_bucket", &[("le", "+Inf")]), Some(3.0));
        assert_eq!(sample(text, "h_count", &[("group", "c")]), None);
    }
}
