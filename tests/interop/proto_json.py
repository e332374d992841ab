#!/usr/bin/env python3
"""The independent side of tests/proto_json_interop.rs: Google's proto3 JSON implementation
(google.protobuf.json_format, `python3 -m pip install protobuf`) answering requests about the
autoclaim schema, one JSON object per line on stdin, one answer per line on stdout, in order.

    proto_json.py DESCRIPTOR_SET    (a google.protobuf.FileDescriptorSet of proto/, binary)

Requests ("op"), with their answers (all have "ok", and "error" when "ok" is false):
  parse              {"type", "json"}     -> {"binary"}: json_format.Parse of the text, as protobuf
  render             {"type", "binary", "seed"}
                                          -> {"renderings": [{"options", "json", "binary"}]}: the
                     message in MessageToJson's option combinations, and with nulls put in for
                     fields (and the message with those fields cleared, which Parse must agree with)
  timestamp_format   {"seconds", "nanos"} -> {"text"}: Timestamp.ToJsonString
  timestamp_parse    {"text"}             -> {"seconds", "nanos"}: Timestamp.FromJsonString
Binary messages are base64 (standard alphabet, padded).
"""
import base64
import json
import random
import sys

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import json_format
from google.protobuf import message_factory
from google.protobuf import timestamp_pb2

TIMESTAMP = "google.protobuf.Timestamp"


def load_pool(path):
    """A fresh pool with every file of the set, each added after the files it imports."""
    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    pending = {f.name: f for f in files}
    if "google/protobuf/timestamp.proto" not in pending:
        pending["google/protobuf/timestamp.proto"] = descriptor_pb2.FileDescriptorProto.FromString(
            timestamp_pb2.DESCRIPTOR.serialized_pb
        )
    pool = descriptor_pool.DescriptorPool()
    added = set()
    while pending:
        ready = [n for n, f in pending.items() if all(d in added for d in f.dependency)]
        if not ready:
            raise SystemExit("descriptor set has imports it does not contain: %s" % sorted(pending))
        for name in ready:
            pool.Add(pending.pop(name))
            added.add(name)
    return pool


class Oracle:
    def __init__(self, pool):
        self.pool = pool
        self.classes = {}

    def message_class(self, name):
        if name not in self.classes:
            descriptor = self.pool.FindMessageTypeByName(name)
            self.classes[name] = message_factory.GetMessageClass(descriptor)
        return self.classes[name]

    def parse(self, req):
        message = self.message_class(req["type"])()
        json_format.Parse(req["json"], message, descriptor_pool=self.pool)
        return {"binary": encode(message)}

    def render(self, req):
        cls = self.message_class(req["type"])
        message = cls.FromString(base64.b64decode(req["binary"]))
        rng = random.Random(req["seed"])
        renderings = []
        for options in OPTION_SETS:
            text = json_format.MessageToJson(message, descriptor_pool=self.pool, **options)
            renderings.append({"options": describe(options), "json": text, "binary": encode(message)})
        for _ in range(2):
            options = rng.choice(OPTION_SETS)
            renderings.append(self.with_nulls(message, options, rng))
        return {"renderings": renderings}

    def with_nulls(self, message, options, rng):
        """The message's JSON with some fields (present or not, at any depth) set to null, and the
        message those nulls leave: the field cleared. Parse must read the one as the other."""
        expected = type(message)()
        expected.CopyFrom(message)
        tree = json.loads(json_format.MessageToJson(message, descriptor_pool=self.pool, **options))
        put_nulls(expected, tree, rng)
        text = json.dumps(tree, ensure_ascii=rng.random() < 0.5)
        reread = type(message)()
        json_format.Parse(text, reread, descriptor_pool=self.pool)
        if reread != expected:
            raise AssertionError("json_format does not read its nulls as defaults: %s" % text)
        return {"options": describe(options) + " with nulls", "json": text, "binary": encode(expected)}

    def timestamp_format(self, req):
        t = timestamp_pb2.Timestamp(seconds=req["seconds"], nanos=req["nanos"])
        return {"text": t.ToJsonString()}

    def timestamp_parse(self, req):
        t = timestamp_pb2.Timestamp()
        t.FromJsonString(req["text"])
        return {"seconds": t.seconds, "nanos": t.nanos}


OPTION_SETS = [
    {},
    {"preserving_proto_field_name": True},
    {"use_integers_for_enums": True, "indent": None},
    {"always_print_fields_with_no_presence": True, "ensure_ascii": False},
    {"always_print_fields_with_no_presence": True, "preserving_proto_field_name": True,
     "use_integers_for_enums": True},
]


def describe(options):
    return ", ".join("%s=%s" % kv for kv in sorted(options.items())) or "defaults"


def put_nulls(message, tree, rng):
    """Sets about a third of `message`'s fields to null in `tree` (its JSON object, under either of
    a field's names), clearing them in `message`, and recurses into the nested messages left."""
    for field in message.DESCRIPTOR.fields:
        names = sorted({field.json_name, field.name})  # one name when they are the same
        present = [n for n in names if n in tree]
        if rng.random() < 0.35:
            for n in present:
                del tree[n]
            tree[rng.choice(names)] = None
            message.ClearField(field.name)
        elif present and field.message_type is not None and field.message_type.full_name != TIMESTAMP:
            value = getattr(message, field.name)
            if field.is_repeated:
                for item, subtree in zip(value, tree[present[0]]):
                    put_nulls(item, subtree, rng)
            else:
                put_nulls(value, tree[present[0]], rng)
    # Keys in any order: a null oneof member must be read as absent before and after the member set.
    keys = list(tree)
    rng.shuffle(keys)
    reordered = {k: tree[k] for k in keys}
    tree.clear()
    tree.update(reordered)


def encode(message):
    return base64.b64encode(message.SerializeToString(deterministic=True)).decode("ascii")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    oracle = Oracle(load_pool(sys.argv[1]))
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        try:
            answer = getattr(oracle, req["op"])(req)
            answer["ok"] = True
        except Exception as e:  # an answer, not a crash: the test decides what a refusal means
            answer = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        answer["id"] = req["id"]
        out.write(json.dumps(answer) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
