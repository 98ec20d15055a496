"""Code shared by the task scripts: data, model, checkpoint and run set-up."""
