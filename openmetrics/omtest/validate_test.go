package omtest

import (
	"strings"
	"testing"
)

func TestValidateRejects(t *testing.T) {
	const ok = "# HELP a A.\n# TYPE a gauge\na 1\n"
	for _, c := range []struct{ why, in string }{
		{"no EOF", ok},
		{"no newline after EOF", ok + "# EOF"},
		{"content after EOF", ok + "# EOF\na 2\n"},
		{"plain comment", "# hello\n" + ok + "# EOF\n"},
		{"interleaved families", ok + "# TYPE b gauge\nb 1\na 2\n# EOF\n"},
		{"repeated family", ok + "# TYPE b gauge\nb 1\n# TYPE a gauge\n# EOF\n"},
		{"metadata after samples", ok + "# HELP a again\n# EOF\n"},
		{"counter without _total", "# TYPE c counter\nc 1\n# EOF\n"},
		{"counter family named _total", "# TYPE c_total counter\nc_total_total 1\n# EOF\n"},
		{"NaN counter", "# TYPE c counter\nc_total NaN\n# EOF\n"},
		{"negative counter", "# TYPE c counter\nc_total -1\n# EOF\n"},
		{"quantile on a gauge", "# TYPE g gauge\ng{quantile=\"0.5\"} 1\n# EOF\n"},
		{"summary without quantile", "# TYPE s summary\ns 1\n# EOF\n"},
		{"quantile not canonical", "# TYPE s summary\ns{quantile=\"0.50\"} 1\n# EOF\n"},
		{"quantile out of range", "# TYPE s summary\ns{quantile=\"1.5\"} 1\n# EOF\n"},
		{"bad escape in label", "a{x=\"\\t\"} 1\n# EOF\n"},
		{"unquoted label", "a{x=1} 1\n# EOF\n"},
		{"label twice", "a{x=\"1\",x=\"2\"} 1\n# EOF\n"},
		{"series twice", "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n# EOF\n"},
		{"bad value", ok + "a{x=\"1\"} one\n# EOF\n"},
		{"bad name", "1a 1\n# EOF\n"},
		{"bad help escape", "# HELP a bad \\t\n# EOF\n"},
		{"invalid UTF-8", "a{x=\"\xff\"} 1\n# EOF\n"},
		{"unknown type", "# TYPE a meter\n# EOF\n"},
	} {
		if err := Validate(strings.NewReader(c.in)); err == nil {
			t.Errorf("%s: Validate accepted %q", c.why, c.in)
		}
	}
	if err := Validate(strings.NewReader(ok + "# EOF\n")); err != nil {
		t.Errorf("rejected a good exposition: %v", err)
	}
}
