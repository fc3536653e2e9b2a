# capstats wire protocol: a stats gatherer polls providers over Cap'n Proto RPC.
# The objects here are reached through the Tub of schema/tub.capnp.
@0x9b37a505c20c9683;

using Go = import "/go.capnp";
$Go.package("statsrpc");
$Go.import("capstats/capnp/statsrpc");

# Gatherer is the object a stats gatherer exports under its furl.
interface Gatherer {
  # provide hands the gatherer a provider to poll. The gatherer identifies
  # the node by the authenticated tub ID of the connection, never by anything
  # the caller claims; nickname is only a label for people ("" when unset).
  provide @0 (provider :Provider, nickname :Text) -> ();
}

# Provider is what a node passes to the gatherer; the gatherer polls it.
interface Provider {
  # getStats returns the node's counters and current stats.
  getStats @0 () -> (stats :Stats);

  # ping does nothing; it measures the cost of a bare round trip and can
  # check that the connection is alive.
  ping @1 () -> ();
}

# Stats is one snapshot of a node: the two namespaces of the original.
struct Stats {
  # counters are monotonic since the node process started.
  counters @0 :Entries;
  # stats are instantaneous values read from producers at query time.
  stats @1 :Entries;
}

# Entries are named values: the i-th name goes with the i-th value. The
# names travel as one blob, not as a Text each: with a pointer per name,
# encoding and decoding a 50-entry reply cost as much as half the call
# itself (see BENCHMARKS.md).
struct Entries {
  # names holds every name in order, each followed by a NUL byte, as in
  # "storage_server.allocate\0storage_server.get\0". A name is dotted, not
  # empty, valid UTF-8, and has no control characters (so no NUL).
  names @0 :Data;
  values @1 :List(Value);
}

# Value is a union so that ints stay ints and an undefined value stays null
# on its way to stats.json.
struct Value {
  union {
    # null is a stat with no defined value (e.g. too few samples).
    null @0 :Void;
    int @1 :Int64;
    float @2 :Float64;
  }
}
