package openmetrics

import (
	"strings"
	"testing"
)

func TestMangle(t *testing.T) {
	for _, c := range []struct {
		ns   Namespace
		name string
		want Series
	}{
		// The brief's example, and Tahoe-LAFS's other percentiles.
		{Stats, "storage_server.latencies.get.99_9_percentile", Series{"storage_server_latencies_get", Summary, "0.999"}},
		{Stats, "storage_server.latencies.get.99_0_percentile", Series{"storage_server_latencies_get", Summary, "0.99"}},
		{Stats, "storage_server.latencies.get.95_0_percentile", Series{"storage_server_latencies_get", Summary, "0.95"}},
		{Stats, "storage_server.latencies.get.90_0_percentile", Series{"storage_server_latencies_get", Summary, "0.9"}},
		{Stats, "storage_server.latencies.get.50_0_percentile", Series{"storage_server_latencies_get", Summary, "0.5"}},
		{Stats, "storage_server.latencies.get.10_0_percentile", Series{"storage_server_latencies_get", Summary, "0.1"}},
		{Stats, "storage_server.latencies.get.01_0_percentile", Series{"storage_server_latencies_get", Summary, "0.01"}},
		{Stats, "x.00_0_percentile", Series{"x", Summary, "0.0"}},
		{Stats, "x_12_5_percentile", Series{"x", Summary, "0.125"}},
		// Tahoe's means and sample sizes stay gauges beside the summary.
		{Stats, "storage_server.latencies.get.mean", Series{"storage_server_latencies_get_mean", Gauge, ""}},
		{Stats, "storage_server.latencies.get.samplesize", Series{"storage_server_latencies_get_samplesize", Gauge, ""}},
		// Not a percentile suffix: no base, wrong digits, not at the end.
		{Stats, "99_9_percentile", Series{"_99_9_percentile", Gauge, ""}},
		{Stats, "x.9_9_percentile", Series{"x_9_9_percentile", Gauge, ""}},
		{Stats, "x.999_9_percentile", Series{"x_999_9_percentile", Gauge, ""}}, // Tahoe's regexp does not match it either
		{Stats, "x.99_9_percentile.y", Series{"x_99_9_percentile_y", Gauge, ""}},
		// Counters: never quantiles, _total belongs to the sample.
		{Counters, "storage_server.allocate", Series{"storage_server_allocate", Counter, ""}},
		{Counters, "downloader.bytes_total", Series{"downloader_bytes", Counter, ""}},
		{Counters, "a.total.total", Series{"a", Counter, ""}},
		{Counters, "_total", Series{"_", Counter, ""}},
		{Counters, "x.99_9_percentile", Series{"x_99_9_percentile", Counter, ""}},
		// Gauges that would read as another type's sample.
		{Stats, "cpu_monitor.total", Series{"cpu_monitor_total_value", Gauge, ""}},
		{Stats, "storage_server.disk_total", Series{"storage_server_disk_total_value", Gauge, ""}},
		{Stats, "queue.count", Series{"queue_count_value", Gauge, ""}},
		{Stats, "x.sum", Series{"x_sum_value", Gauge, ""}},
		{Stats, "x.count.99_9_percentile", Series{"x_count_value", Summary, "0.999"}},
		{Stats, "total", Series{"total", Gauge, ""}},
		// Sanitising.
		{Stats, "cpu_monitor.1min_avg", Series{"cpu_monitor_1min_avg", Gauge, ""}},
		{Stats, "1st.thing", Series{"_1st_thing", Gauge, ""}},
		{Stats, "", Series{"_", Gauge, ""}},
		{Stats, "a:b", Series{"a_b", Gauge, ""}},
		{Stats, "ünï.côde", Series{"_n__c_de", Gauge, ""}},
		{Stats, "bad\xffutf8", Series{"bad_utf8", Gauge, ""}},
		{Stats, "sp ace/slash\"quote", Series{"sp_ace_slash_quote", Gauge, ""}},
		{Stats, "1.99_9_percentile", Series{"_1", Summary, "0.999"}},
	} {
		got := Mangle(c.ns, c.name)
		if got != c.want {
			t.Errorf("Mangle(%v, %q) = %+v, want %+v", c.ns, c.name, got, c.want)
		}
	}
}

func TestHelpNamesTheOriginal(t *testing.T) {
	for _, c := range []struct {
		ns         Namespace
		name, want string
	}{
		{Counters, "storage_server.allocate", "Node counter storage_server.allocate."},
		{Stats, "load_monitor.avg_load", "Node stat load_monitor.avg_load."},
		{Stats, "storage_server.latencies.get.99_9_percentile", "Node stats storage_server.latencies.get.NN_N_percentile, as quantiles."},
		{Stats, "lat€99_9_percentile", "Node stats lat€NN_N_percentile, as quantiles."},
	} {
		if got := Help(c.ns, c.name, Mangle(c.ns, c.name)); got != c.want {
			t.Errorf("Help(%q) = %q, want %q", c.name, got, c.want)
		}
	}
}

func FuzzMangle(f *testing.F) {
	for _, s := range []string{"storage_server.latencies.get.99_9_percentile", "a.total", "1x", "", "ü", "_total", "x_count_99_9_percentile"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, name string, counter bool) {
		ns := Stats
		if counter {
			ns = Counters
		}
		s := Mangle(ns, name)
		if !ValidMetricName(s.Family) || strings.Contains(s.Family, ":") {
			t.Fatalf("Mangle(%q) family %q is not a valid name", name, s.Family)
		}
		switch s.Type {
		case Counter:
			if strings.HasSuffix(s.Family, "_total") || s.Quantile != "" {
				t.Fatalf("Mangle(%q) = %+v", name, s)
			}
		case Gauge, Summary:
			for _, suf := range reservedSuffixes {
				if strings.HasSuffix(s.Family, suf) {
					t.Fatalf("Mangle(%q) family %q ends in %s", name, s.Family, suf)
				}
			}
			if (s.Type == Summary) != (s.Quantile != "") {
				t.Fatalf("Mangle(%q) = %+v", name, s)
			}
		}
		_ = Help(ns, name, s) // must not panic
	})
}
