#!/usr/bin/env python3
"""A small client of the sensor's gRPC API (sensor.v1.Sensor), for SIEM integrations to copy.

    pip install grpcio grpcio-tools
    sudo python3 sensor_client.py alerts                 # live alerts, one JSON object per line
    sudo python3 sensor_client.py alerts --since 0       # everything still in the spool, then live
    sudo python3 sensor_client.py alerts --rule CRS-008 --count 1
    sudo python3 sensor_client.py health
    sudo python3 sensor_client.py rules
    python3 sensor_client.py --addr sensor-node:50051 --ca ca.pem --cert me.pem --key me-key.pem alerts

The stubs are compiled from the agent's own proto/ files at start (grpcio-tools), so the client
always matches the schema it is given (--proto-dir). Alerts carry `seq`: to resume after a
reconnect without losing any, pass the last seq you processed as --since; an alert can then come
twice (at-least-once), so deduplicate by `id`.

The Unix socket: grpcio (gRPC C-core) sends the socket path as the HTTP/2 `:authority`, which
the HTTP/2 layer under the agent refuses (the call ends at once with RST_STREAM, PROTOCOL_ERROR).
Every client of a Unix socket must set the authority to `localhost`: this one passes the channel
option `grpc.default_authority`; grpc-java: `overrideAuthority("localhost")`; grpcurl:
`-authority localhost`. Go and Rust (tonic) clients already send `localhost`.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.join(HERE, "..", "..", "proto")
DEFAULT_SOCKET = "/run/sensor/sensor.sock"
PROTOS = ["sensor.proto", "alert.proto", "service.proto"]


def load_stubs(proto_dir):
    """Compiles proto_dir's schema into a temporary package and imports it."""
    out = tempfile.mkdtemp(prefix="sensor-stubs-")
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + [os.path.join(proto_dir, p) for p in PROTOS]) != 0:
        sys.exit(f"sensor_client: could not compile the schema in {proto_dir} (--proto-dir)")
    sys.path.insert(0, out)
    return importlib.import_module("service_pb2"), importlib.import_module("service_pb2_grpc")


def channel(args):
    if args.addr:
        if not (args.ca and args.cert and args.key):
            sys.exit("sensor_client: --addr needs --ca, --cert and --key (the agent's TCP "
                     "endpoint takes mutual TLS only)")
        read = lambda path: open(path, "rb").read()
        creds = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
        return grpc.secure_channel(args.addr, creds)
    options = [] if args.stock_authority else [("grpc.default_authority", "localhost")]
    return grpc.insecure_channel(f"unix://{args.socket}", options=options)


def as_json(message):
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="the agent's Unix socket")
    parser.add_argument("--addr", help="HOST:PORT of the agent's TCP endpoint (mutual TLS)")
    parser.add_argument("--ca", help="CA (PEM) the agent's certificate chains to")
    parser.add_argument("--cert", help="this client's certificate (PEM)")
    parser.add_argument("--key", help="this client's private key (PEM)")
    parser.add_argument("--proto-dir", default=DEFAULT_PROTO_DIR, help="the agent's proto/")
    parser.add_argument("--stock-authority", action="store_true",
                        help="send grpcio's default :authority (the socket path), which the "
                             "agent refuses: shows what an unconfigured client gets")
    sub = parser.add_subparsers(dest="command", required=True)
    alerts = sub.add_parser("alerts", help="stream alerts as JSON lines")
    alerts.add_argument("--since", type=int, help="replay from the spool after this seq")
    alerts.add_argument("--rule", action="append", default=[], help="only this rule id")
    alerts.add_argument("--count", type=int, help="stop after this many alerts")
    sub.add_parser("health", help="the agent's health, as JSON")
    sub.add_parser("rules", help="the rules in force, as JSON")
    args = parser.parse_args()

    pb, rpc = load_stubs(args.proto_dir)
    try:
        with channel(args) as ch:
            stub = rpc.SensorStub(ch)
            if args.command == "health":
                print(as_json(stub.GetHealth(pb.GetHealthRequest(), timeout=10)))
            elif args.command == "rules":
                print(as_json(stub.ListRules(pb.ListRulesRequest(), timeout=10)))
            else:
                request = pb.WatchAlertsRequest(filter=pb.AlertFilter(rule_ids=args.rule))
                if args.since is not None:
                    request.since_seq = args.since
                seen = 0
                for item in stub.WatchAlerts(request):
                    if item.HasField("missed"):
                        print(f"sensor_client: missed {item.missed.count} alerts "
                              f"({item.missed.reason})", file=sys.stderr)
                        continue
                    print(as_json(item.alert), flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
    except grpc.RpcError as e:
        sys.exit(f"sensor_client: {e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
