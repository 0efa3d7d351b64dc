//! `kind = "command"`: an external program run once per trial. It gets the parameters as a
//! JSON object on stdin and as `SFT_PARAM_<NAME>` variables, plus `SFT_TRIAL_NUMBER`,
//! `SFT_DEVICE` and, for a `cuda:k` slot, `CUDA_VISIBLE_DEVICES=k`; it answers with JSON lines
//! (see `scheduler::child`).

use std::path::PathBuf;
use std::time::Duration;

use crate::scheduler::{run_child, CancelToken, ChildSpec, Reporter, TrialAssignment, TrialRunner};
use crate::trial::Outcome;

/// Runs a user's command per trial.
#[derive(Debug, Clone)]
pub struct CommandRunner {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub trial_timeout: Option<Duration>,
}

/// The environment variables a trial's process gets.
pub fn trial_env(a: &TrialAssignment) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = a
        .params
        .iter()
        .map(|(k, v)| {
            let name: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
            (format!("SFT_PARAM_{name}"), v.to_string_exact())
        })
        .collect();
    env.push(("SFT_TRIAL_NUMBER".into(), a.number.to_string()));
    env.push(("SFT_DEVICE".into(), a.device.clone()));
    env.push(("SFT_ARTIFACTS_DIR".into(), a.artifacts_dir.display().to_string()));
    if let Some(k) = a.device.strip_prefix("cuda:") {
        env.push(("CUDA_VISIBLE_DEVICES".into(), k.to_string()));
    }
    env
}

impl TrialRunner for CommandRunner {
    fn run(&self, a: &TrialAssignment, reporter: &mut dyn Reporter, cancel: &CancelToken) -> Outcome {
        let Some((program, args)) = self.argv.split_first() else {
            return Outcome::Failed { reason: "empty command".into() };
        };
        let payload: serde_json::Map<String, serde_json::Value> = a.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
        let spec = ChildSpec {
            args: args.iter().map(Into::into).collect(),
            env: trial_env(a),
            cwd: Some(self.cwd.clone()),
            stdin_payload: serde_json::Value::Object(payload).to_string(),
            keep_stdin_open: false,
            idle_timeout: self.trial_timeout,
            grace: Duration::from_secs(5),
            ..ChildSpec::new(program)
        };
        run_child(&spec, reporter, cancel)
    }
}
