"""Training jobs for cluster engines, rendered from one command (`python -m toolkit.deploy ENGINE`).

  spec        what every engine shares: the checks of the flags, the trainer's command line, the exit
              codes that restart the workers and those that fail the job
  kubernetes  an Indexed Job + headless Service, a JobSet, a (legacy) Kubeflow TFJob: Python dicts
  slurm       an sbatch script: one srun task per node, a bounded restart loop
  vertex      a Vertex AI CustomJobSpec (`gcloud ai custom-jobs create --config`)
  render      ENGINE -> the text (YAML through PyYAML, or bash), and the atomic write of it

No TensorFlow here: a job is rendered in a fraction of a second on a laptop without it.
"""
