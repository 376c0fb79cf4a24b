"""Off a terminal the trainers print no per-step log dicts: transformers' PrinterCallback (what
`disable_tqdm` puts in place of the bars) is dropped, so a CI log gets no line per `logging_steps`."""

from transformers.trainer_callback import PrinterCallback

from tsllm.training.callbacks import quiet_off_terminal


class Recorder:
    def __init__(self):
        self.removed = []

    def remove_callback(self, callback):
        self.removed.append(callback)


def test_off_a_terminal_the_printer_callback_goes(monkeypatch):
    monkeypatch.setenv("TSLLM_PROGRESS", "0")  # what a CI log is: no bars, so no printer either
    trainer = Recorder()
    assert quiet_off_terminal(trainer) is trainer and trainer.removed == [PrinterCallback]


def test_on_a_terminal_the_trainer_is_left_alone(monkeypatch):
    monkeypatch.setattr("tsllm.progress.show_progress", lambda wanted=True: True)
    trainer = Recorder()
    assert quiet_off_terminal(trainer) is trainer and trainer.removed == []
