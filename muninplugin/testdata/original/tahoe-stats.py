#!/usr/bin/env python3
# A reconstruction of the original plugin's logic (Tahoe-LAFS
# misc/munin/tahoe-stats.py, JSON era, 2016), for cross-checking capstats'
# tahoe_stats: the table comes from ../../munin-graphs.json, the clock from
# $NOW. Not the original file, but its loop was checked line by line against
# the original's (tahoe-lafs misc/operations_helpers/munin/tahoe_stats,
# output_nodes and main), and the table against its PLUGINS: print the header,
# then for every node (dict order = file order) whose stat is not None the
# series lines; fetch skips nodes older than 300 s and prints the value with
# Python's %s.
import json, os, re, sys, time

STAT_VALIDITY = 300
HERE = os.path.dirname(os.path.realpath(__file__))
with open(os.path.join(HERE, '..', '..', 'munin-graphs.json')) as f:
    PLUGINS = {g['graph']: {'statid': g['statid'], 'category': g['category'],
                            'configheader': '\n'.join(g['header']),
                            'graph_config': '\n'.join(g['series']),
                            'graph_render': '%(name)s.value %(value)s'}
               for g in json.load(f)}


def smash_name(name):
    return re.sub('[^a-zA-Z0-9]', '_', name)


def main(argv):
    graph_name = os.path.basename(argv[0])
    if graph_name.endswith('.py'):
        graph_name = graph_name[:-3]
    plugin_conf = PLUGINS.get(graph_name)
    for k, v in os.environ.items():
        if k.startswith('statsfile'):
            stats_file = v
            break
    else:
        raise RuntimeError("No 'statsfile' env var found")
    with open(stats_file) as f:
        stats = json.load(f)
    now = float(os.environ.get('NOW', time.time()))

    def output_nodes(output_section, check_time):
        for tubid, nodestats in stats.items():
            if check_time and (now - nodestats.get('timestamp', 0)) > STAT_VALIDITY:
                continue
            name = smash_name("%s_%s" % (nodestats['nickname'], tubid[:4]))
            category = plugin_conf['category']
            statid = plugin_conf['statid']
            value = nodestats['stats'][category].get(statid)
            if value is not None:
                args = {'name': name, 'value': value}
                print(plugin_conf[output_section] % args)

    if len(argv) > 1 and argv[1] == 'config':
        print(plugin_conf['configheader'])
        output_nodes('graph_config', False)
        sys.exit(0)
    output_nodes('graph_render', True)


if __name__ == '__main__':
    main(sys.argv)
