package gatherer

// Config returns the configuration in use, defaults filled in.
func (g *Gatherer) Config() Config { return g.cfg }
