"""A plug-in the tests register at run time: a toy input kind and a toy task."""
