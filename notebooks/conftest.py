"""nbval: compare only stable text outputs; never rich figure or widget payloads (as TransformerLens's demos do)."""


def pytest_collectstart(collector):
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += (
            "text/html",
            "application/javascript",
            "image/png",
            "image/svg+xml",
            "application/vnd.plotly.v1+json",
            "application/vnd.jupyter.widget-view+json",
        )
