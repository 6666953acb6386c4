"""Qwen2 Lab's web demo, as a small package of panels. Each panel module builds AND wires its own part of the page
with `build(lab, page)`; `demo/app.py` only lays out the tabs and launches.

    page.py       Page: the components panels share, and how a turn starts and what follows each reply
    serving.py    one model at a time (the concurrency group), ZeroGPU, and the one place a refused input
                  (qwen2_lab's InputError) becomes a message on the page
    examples.py   the examples that fit the model that runs (read from a bundled checkpoint's examples.json, or the
                  Qwen2 launch's problems), the banner, and the verdict on a reply to an example
    chat.py       the chat: messages in, the Lab's reply streamed out; the `/chat` API on the same path
    tokens.py     the last reply token by token: how sure the model was, alternatives, continue from a token
    check.py      code and math checks: a box to paste or edit code, its report, the failure sent back
    inside.py     Look inside: the reply's attention, logit lens and routing, drawn by qwen2_lab.viz
    whatif.py     What if: the last answer regenerated with one change inside the model
    card.py       the Model card tab: the model, its shape, and (bundled models) its measured scores
"""
