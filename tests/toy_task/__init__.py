"""A toy task with two outputs (class logits and a 4-d embedding), built only from this folder: the check that a
new task is one folder plus one registry line (``edgeft.tasks.register_task``)."""
