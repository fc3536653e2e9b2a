# capstats tub: the bootstrap interface of every connection, apart from the
# stats schema so that the transport knows nothing of stats.
@0xf39b10bfba0c0bf0;

using Go = import "/go.capnp";
$Go.package("tubrpc");
$Go.import("capstats/capnp/tubrpc");

# Tub restores a capability from the unguessable swiss number carried in a
# furl, so knowing the furl is the authority to use the object.
#
# The explicit ID is the one Tub had when it was declared in stats.capnp
# (derived from that file's ID): a call carries only the interface ID and
# the method number, so keeping the ID keeps nodes and gatherers of earlier
# versions working with this one. Never change it.
interface Tub @0xd9995d9d0d8c8af4 {
  # fetch returns the capability registered under swissnum, or fails without
  # echoing the swissnum back when none is.
  fetch @0 (swissnum :Text) -> (object :Capability);
}
