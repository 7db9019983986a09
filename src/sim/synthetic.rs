//! A synthetic trace: job sizes, priorities and namespaces drawn from
//! weighted lists, Poisson arrivals, log-normal run times (heavy-tailed, as
//! published GPU cluster traces are). The same seed gives the same trace.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use super::trace::Job;

/// Weighted choices, written `value:weight,value:weight` (`value` alone weighs 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted<T>(pub Vec<(T, f64)>);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{item:?}: {message}")]
pub struct WeightedError {
    pub item: String,
    pub message: String,
}

impl<T: FromStr> FromStr for Weighted<T> {
    type Err = WeightedError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut choices = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = |message: &str| WeightedError { item: item.to_string(), message: message.to_string() };
            let (value, weight) = item.split_once(':').unwrap_or((item, "1"));
            let value = value.trim().parse::<T>().map_err(|_| bad("the value is not a number"))?;
            let weight = weight.trim().parse::<f64>().map_err(|_| bad("the weight is not a number"))?;
            if !(weight.is_finite() && weight > 0.0) {
                return Err(bad("the weight must be above 0"));
            }
            choices.push((value, weight));
        }
        if choices.is_empty() {
            return Err(WeightedError { item: text.to_string(), message: "names no value".into() });
        }
        Ok(Weighted(choices))
    }
}

impl<T: Copy> Weighted<T> {
    fn pick(&self, rng: &mut SplitMix64) -> T {
        let total: f64 = self.0.iter().map(|(_, w)| w).sum();
        let mut at = rng.unit() * total;
        for (value, weight) in &self.0 {
            if at < *weight {
                return *value;
            }
            at -= weight;
        }
        self.0.last().expect("not empty").0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub jobs: usize,
    /// Mean jobs submitted per second (Poisson); 0 submits all at once.
    pub arrivals_per_second: f64,
    /// Job sizes in GPUs.
    pub sizes: Weighted<u32>,
    /// Larger jobs are split into pods of this many GPUs (one node's worth).
    pub gpus_per_pod: u32,
    pub mean_duration: Duration,
    /// Spread of the log-normal run time (sigma of its logarithm); 0 makes
    /// every job run `mean_duration`.
    pub duration_sigma: f64,
    pub priorities: Weighted<i32>,
    /// Jobs go round-robin-at-random into `team-0` .. `team-{n-1}`.
    pub namespaces: usize,
    pub seed: u64,
}

/// Run times are at least this long, so a draw far in the tail near zero
/// does not make a job that ends as it starts.
const MIN_DURATION: Duration = Duration::from_secs(1);

pub fn generate(spec: &SyntheticSpec) -> Vec<Job> {
    let mut rng = SplitMix64(spec.seed);
    let mut submit = 0.0;
    let mean = spec.mean_duration.as_secs_f64();
    // A log-normal with this mean: exp(mu + sigma^2 / 2) = mean.
    let mu = mean.max(f64::MIN_POSITIVE).ln() - spec.duration_sigma * spec.duration_sigma / 2.0;
    let per_pod = spec.gpus_per_pod.max(1);
    (0..spec.jobs)
        .map(|i| {
            if spec.arrivals_per_second > 0.0 && i > 0 {
                submit += -(1.0 - rng.unit()).ln() / spec.arrivals_per_second;
            }
            let gpus = spec.sizes.pick(&mut rng).max(1);
            let pods = gpus.div_ceil(per_pod);
            let seconds = (mu + spec.duration_sigma * rng.normal()).exp();
            Job {
                name: format!("job{i}"),
                namespace: format!("team-{}", rng.below(spec.namespaces.max(1) as u64)),
                submit: Duration::from_secs_f64(submit),
                duration: Duration::from_secs_f64(seconds).max(MIN_DURATION),
                pods,
                gpus_per_pod: gpus.div_ceil(pods),
                priority: spec.priorities.pick(&mut rng),
            }
        })
        .collect()
}

/// A small, fast generator whose sequence is fixed by its seed on every
/// platform and version (unlike a library's default generator). The
/// agreement test's generator draws from it too.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            jobs: 400,
            arrivals_per_second: 0.5,
            sizes: "1:4,8:3,64:1".parse().unwrap(),
            gpus_per_pod: 8,
            mean_duration: Duration::from_secs(600),
            duration_sigma: 1.0,
            priorities: "0:3,100:1".parse().unwrap(),
            namespaces: 3,
            seed,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
        assert_eq!(generate(&spec(7)), generate(&spec(7)));
        assert_ne!(generate(&spec(7)), generate(&spec(8)));
    }

    #[test]
    fn draws_follow_the_spec() {
        let jobs = generate(&spec(1));
        assert!(jobs.windows(2).all(|w| w[0].submit <= w[1].submit), "in order of submission");
        let last = jobs.last().unwrap().submit.as_secs_f64();
        assert!((600.0..1000.0).contains(&last), "about 400 jobs / 0.5 per s = 800 s: {last}");
        for job in &jobs {
            assert!(matches!((job.pods, job.gpus_per_pod), (1, 1) | (1, 8) | (8, 8)), "{job:?}");
            assert!([0, 100].contains(&job.priority));
            assert!(["team-0", "team-1", "team-2"].contains(&job.namespace.as_str()));
        }
        let big = jobs.iter().filter(|j| j.gpus() == 64).count() as f64 / jobs.len() as f64;
        assert!((0.07..0.19).contains(&big), "64-GPU jobs weigh 1 in 8: {big}");
        let mean = jobs.iter().map(|j| j.duration.as_secs_f64()).sum::<f64>() / jobs.len() as f64;
        assert!((400.0..850.0).contains(&mean), "mean run time about 600 s: {mean}");
    }

    #[test]
    fn weighted_lists_parse_or_name_the_bad_item() {
        let w: Weighted<u32> = "1:0.5, 8".parse().unwrap();
        assert_eq!(w.0, vec![(1, 0.5), (8, 1.0)]);
        let err = "1:2,x:1".parse::<Weighted<u32>>().unwrap_err();
        assert_eq!(err.item, "x:1");
        assert!("4:0".parse::<Weighted<u32>>().is_err());
        assert!("".parse::<Weighted<u32>>().is_err());
    }
}
