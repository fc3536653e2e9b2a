package atomicfile

import "testing"

// SetFaultHook makes Write fail at a step for the rest of the test.
func SetFaultHook(t *testing.T, hook func(step string) error) {
	faultHook = hook
	t.Cleanup(func() { faultHook = nil })
}
