"""Record the V2 request bodies that the real KServe and MLServer Python clients send.

Not run by the suite: run it in a separate virtualenv that has the client (the two cannot share one
process: both register the ``inference.*`` protobuf symbols), then merge the outputs into
``tests/integration/data/v2_client_requests.json``::

    venv/bin/python tests/support/gen_v2_bodies.py mlserver > /tmp/mlserver.json   # pip install mlserver
    venv/bin/python tests/support/gen_v2_bodies.py kserve > /tmp/kserve.json         # pip install kserve

Rows 0-4 of scikit-learn's breast_cancer, as float64, like ``tests.support.models.sample_rows(5)``.
"""

from __future__ import annotations

import json
import sys


def main(which: str) -> dict:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.data.astype("float64").iloc[0:5]
    X = frame.to_numpy()
    out: dict = {}
    if which == "mlserver":
        import mlserver
        from mlserver.codecs import NumpyCodec, NumpyRequestCodec, PandasCodec
        from mlserver.types import InferenceRequest

        out["version"] = f"mlserver {mlserver.__version__}"
        dump = lambda r: json.loads(r.model_dump_json(exclude_none=True))  # noqa: E731
        out["mlserver_numpy_request"] = dump(NumpyRequestCodec.encode_request(X))
        out["mlserver_numpy_input"] = dump(
            InferenceRequest(inputs=[NumpyCodec.encode_input(name="predict", payload=X)])
        )
        out["mlserver_pandas_request"] = dump(PandasCodec.encode_request(frame))
        return out
    from importlib.metadata import version

    from kserve import InferInput, InferRequest

    out["version"] = f"kserve {version('kserve')}"
    t = InferInput(name="input-0", shape=list(X.shape), datatype="FP64")
    t.set_data_from_numpy(X, binary_data=False)
    out["kserve_json"] = InferRequest(model_name="M", infer_inputs=[t], request_id="kserve-json-1").to_rest()[
        0
    ]
    t = InferInput(name="input-0", shape=list(X.shape), datatype="FP64")
    t.set_data_from_numpy(X)  # binary_data=True is the client's default
    body, json_length = InferRequest(model_name="M", infer_inputs=[t], request_id="kserve-bin-1").to_rest()
    out["kserve_binary"] = {"body_hex": body.hex(), "json_length": json_length}
    cols = []
    for j, c in enumerate(frame.columns):
        t = InferInput(name=c, shape=[len(X)], datatype="FP64")
        t.set_data_from_numpy(X[:, j], binary_data=False)
        cols.append(t)
    out["kserve_columns"] = InferRequest(
        model_name="M", infer_inputs=cols, request_id="kserve-cols-1"
    ).to_rest()[0]
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
