"""Plain typed values of medmesh: readings, the measurement vocabulary, units, errors. No I/O."""
