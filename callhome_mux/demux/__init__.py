"""callhome_mux.demux"""
