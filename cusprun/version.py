"""The package version (its own module so that library code can name it without importing the
package's entry points)."""
__version__ = "0.1.0"
