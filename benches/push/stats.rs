//! Medians over runs, and the figures' formats.

/// The median of several runs and their range.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Median (the mean of the middle two for an even count), minimum and maximum of `values`.
    pub fn of(values: &[f64]) -> Spread {
        assert!(!values.is_empty(), "no runs");
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// `median unit (min–max)`, the three in the unit `fmt` picks for the median.
    pub fn show(&self, fmt: fn(f64) -> (f64, &'static str, usize)) -> String {
        let (scale, unit, decimals) = fmt(self.median);
        let n = |x: f64| number(x / scale, decimals);
        format!("{}{unit} ({}–{})", n(self.median), n(self.min), n(self.max))
    }
}

/// `x` with `decimals` decimals, the whole part's thousands separated by commas.
pub fn number(x: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, x.max(0.0));
    let (whole, fraction) = text.split_at(text.find('.').unwrap_or(text.len()));
    let mut out = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out + fraction
}

/// A count: no decimals, no unit (`12,345`).
pub fn count(_: f64) -> (f64, &'static str, usize) {
    (1.0, "", 0)
}

/// A latency in µs: whole µs, or ms with one decimal from 10 ms up.
pub fn micros(median_us: f64) -> (f64, &'static str, usize) {
    if median_us >= 10_000.0 {
        (1000.0, " ms", 1)
    } else {
        (1.0, " µs", 0)
    }
}

/// CPU time per push in µs, one decimal.
pub fn cpu(_: f64) -> (f64, &'static str, usize) {
    (1.0, " µs", 1)
}

/// CPU time of a process so far, from `/proc/<pid>/stat`: user + system time of all its
/// threads, in µs (the kernel reports it in clock ticks of 1/100 s).
pub fn cpu_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3, utime field 14, stime field 15 (proc(5)).
    let rest = &stat[stat.rfind(')').expect("/proc stat format") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 * 1e6 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}
