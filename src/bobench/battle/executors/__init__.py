"""One family of executors, each running a planned run to its record (`base.Executor`): `local`
(in process), `grpc` (remote evaluators), `kubernetes` (one Job per run, with its parts `k8s_api`,
`k8s_jobs`, `job_entry`; the detection protocols' checkpoint directories are
`bobench.protocols.job_checkpoints`) and `pool` (the evaluator service's local executors)."""
