//go:build !unix

package main

func raiseNofile(int) {}
